"""Pieces of the kube layer that need no API server: client configuration, MicroTime, backoff, errors."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qosgate.core.nodereport import parse_time
from qosgate.kube import config as kube_config
from qosgate.kube.config import KubeConfigError, load_api_client
from qosgate.kube.informer import Backoff
from qosgate.kube.leader import LeaderElector, format_microtime
from qosgate.kube.rest import status_error

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: c1
  cluster: {server: "http://127.0.0.1:1"}
- name: c2
  cluster: {server: "http://127.0.0.1:2"}
users:
- name: u
  user: {token: secret-token}
contexts:
- name: one
  context: {cluster: c1, user: u}
- name: two
  context: {cluster: c2, user: u}
current-context: one
"""


@pytest.fixture
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_explicit_kubeconfig_and_context(no_ambient_config: Path) -> None:
    path = no_ambient_config / "kc.yaml"
    path.write_text(KUBECONFIG)
    client = load_api_client(str(path))
    assert client.server == "http://127.0.0.1:1"
    assert client.config.token == "secret-token"
    assert client.pool_size >= kube_config.POOL_SIZE
    assert load_api_client(str(path), context="two").server == "http://127.0.0.1:2"


def test_missing_explicit_kubeconfig_is_an_error_not_a_fallback(no_ambient_config: Path) -> None:
    (no_ambient_config / ".kube").mkdir()
    (no_ambient_config / ".kube" / "config").write_text(KUBECONFIG)
    with pytest.raises(KubeConfigError, match="does not exist"):
        load_api_client(str(no_ambient_config / "typo.yaml"))


def test_unknown_context_and_garbage_files(no_ambient_config: Path) -> None:
    path = no_ambient_config / "kc.yaml"
    path.write_text(KUBECONFIG)
    with pytest.raises(KubeConfigError, match="three"):
        load_api_client(str(path), context="three")
    path.write_text("{{{ not yaml")
    with pytest.raises(KubeConfigError, match=str(path)):
        load_api_client(str(path))


def test_home_and_env_kubeconfig(no_ambient_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KubeConfigError, match="no Kubernetes API configuration found"):
        load_api_client()
    (no_ambient_config / ".kube").mkdir()
    (no_ambient_config / ".kube" / "config").write_text(KUBECONFIG)
    assert load_api_client().server == "http://127.0.0.1:1"
    other = no_ambient_config / "other.yaml"
    other.write_text(KUBECONFIG.replace("current-context: one", "current-context: two"))
    monkeypatch.setenv("KUBECONFIG", str(other))
    assert load_api_client().server == "http://127.0.0.1:2"


def test_in_cluster(no_ambient_config: Path, monkeypatch: pytest.MonkeyPatch, cert_dir: Path) -> None:
    sa = no_ambient_config / "sa"
    sa.mkdir()
    (sa / "token").write_text("pod-token")
    (sa / "ca.crt").write_bytes((cert_dir / "ca.crt").read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_TOKEN", sa / "token")
    monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_CA", sa / "ca.crt")
    client = load_api_client()
    assert client.server == "https://10.0.0.1:443"
    assert client.config.token_file == str(sa / "token") and client.config.ca_file == str(sa / "ca.crt")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")  # IPv6 service addresses are bracketed
    assert load_api_client().server == "https://[fd00::1]:443"
    # A context asks for a kubeconfig, never the service account.
    with pytest.raises(KubeConfigError, match="skipped: a context was requested"):
        load_api_client(context="one")


def test_the_lease_times_written_are_read_back_exactly_by_the_lease_readers() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    text = format_microtime(moment)
    assert text == "2026-01-02T03:04:05.678901Z"  # metav1.MicroTime
    assert parse_time(text) == moment  # what the extender and `qosgate status` read renewTime with
    assert parse_time("2026-01-02T03:04:05Z") == moment.replace(microsecond=0)
    assert parse_time("garbage") is None and parse_time(None) is None


def test_elector_rejects_unsafe_timings() -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(None, "ns", "lease", "me", lease_duration=1.0, renew_deadline=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(None, "ns", "lease", "")  # type: ignore[arg-type]


def test_backoff_grows_is_capped_jittered_and_resets() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[5:])
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_status_errors() -> None:
    err = status_error(409, b'{"kind":"Status","code":409,"reason":"Conflict","message":"stale"}')
    assert err.conflict and err.reason == "Conflict" and "stale" in str(err)
    gone = status_error(410, b"<html>expired</html>", "Gone")
    assert gone.gone and "expired" in str(gone)
    assert status_error(404, b"").not_found
