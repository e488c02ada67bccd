"""Shared fixtures. Each helper module owns its fixtures; they are imported here so every suite sees them."""
import os

from hypothesis import settings

from tests.fakeapi.fixtures import fake_api  # noqa: F401  (fake kube-apiserver fixture for every suite)
from tests.support.tls import cert_dir, fresh_cert_dir  # noqa: F401  (TLS fixtures for every suite)

# CI (HYPOTHESIS_PROFILE=ci, set by .ci/run) replays the same examples on every run, so a red build always
# means a change broke something; elsewhere every run explores new examples and keeps what failed in
# .hypothesis/ to replay first. Property tests still explore widely: run them locally, often.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
