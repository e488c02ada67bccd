"""Shared fixtures. Each helper module owns its fixtures; they are imported here so every suite sees them."""
from tests.fakeapi.fixtures import fake_api  # noqa: F401  (fake kube-apiserver fixture for every suite)
from tests.support.tls import cert_dir, fresh_cert_dir  # noqa: F401  (TLS fixtures for every suite)
