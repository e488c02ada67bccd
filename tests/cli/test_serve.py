"""`qosgate serve` as a real process: local mode, and cluster mode against the fake API acting as apiserver."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import ServedProcess, launcher
from tests.support.tls import eventually, https_client

EXTENDER_HOSTNAME = "qosgate-extender.qosgate-system.svc"
CLUSTER_CATALOG = """\
protectablePercent: 50
resources:
- name: memory-qos
  classes:
  - {name: gold, memoryMinPercent: 50}
"""


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServedProcess]]:
    with launcher(tmp_path) as launched:
        yield launched.start


def review(annotations: dict[str, str], uid: str = "u-1") -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "team-a",
        "operation": "CREATE", "userInfo": {"username": "alice"},
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "annotations": annotations},
                   "spec": {"containers": [{"name": "app", "resources": {"requests": {"memory": "1Gi"}}}]}}}}


def test_local_mode_serves_webhook_and_extender_over_verified_https(serve):
    served = serve("--local")
    with https_client(served.cert_dir, served.ports["webhook"], timeout=10) as webhook:
        answer = webhook.post("/mutate", json=review({"qos-resources.qosgate.io": "memory-qos=gold"})).json()
        assert answer["response"]["allowed"] is True and "patch" in answer["response"]
        denied = webhook.post("/validate", json=review({"qos-resources.qosgate.io": "memory-qos=tin"})).json()
        assert denied["response"]["allowed"] is False
    args = {"Pod": {"metadata": {"name": "p", "namespace": "team-a", "uid": "u",
                                 "annotations": {"qosgate.io/memory-min": str(2**30)}}},
            "Nodes": {"items": [{"metadata": {"name": "big"}, "status": {"allocatable": {"memory": "8Gi"}}},
                                {"metadata": {"name": "small"}, "status": {"allocatable": {"memory": "1Gi"}}}]}}
    with https_client(served.cert_dir, served.ports["extender"], EXTENDER_HOSTNAME, timeout=10,
                      client_cert=True) as extender:
        result = extender.post("/filter", json=args).json()
    assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ["big"]
    assert "small" in result["FailedAndUnresolvableNodes"]
    metrics = served.health("/metrics").text
    assert 'qosgate_admission_requests_total{decision="allowed",operation="CREATE",reason="",webhook="mutate"}' \
        in metrics
    assert "qosgate_certificate_expiry_timestamp_seconds" in metrics


def test_sigterm_fails_readiness_first_then_exits_cleanly(serve):
    served = serve("--local", "--shutdown-delay", "3")
    served.process.send_signal(signal.SIGTERM)
    eventually(lambda: served.health("/readyz").status_code == 503, timeout=10)
    assert "shutting down" in served.health("/readyz").text
    assert served.process.wait(timeout=60) == 0


def test_missing_certificates_with_no_generate_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "qosgate.cli.main", "serve", "webhook", "--local",
                             "--no-generate-certs",
                             "--cert-dir", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 1
    assert "--cert-dir" in result.stderr and "Traceback" not in result.stderr


def test_cluster_mode_mutates_and_enforces_quota_through_the_apiserver(serve, fake_api, tmp_path):
    kubeconfig = fake_api.write_kubeconfig(str(tmp_path / "kubeconfig"))
    fake_api.seed([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        for name in ("qosgate-system", "team-a")
    ] + [{"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "quota", "namespace": "team-a", "labels": {"qosgate.io/quota": "true"}},
          "data": {"quota.yaml": "pod:\n- name: memory-qos\n  classes:\n  - {name: gold, capacity: 1}\n"}},
       {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "qosgate-classes", "namespace": "qosgate-system"},
        "data": {"catalog.yaml": CLUSTER_CATALOG}},
       {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
        "status": {"allocatable": {"memory": "8Gi"}, "capacity": {"memory": "8Gi"}}}])
    served = serve("--kubeconfig", kubeconfig)
    ca = (served.cert_dir / "ca.crt").read_bytes()
    for kind, path in (("mutating", "mutate"), ("validating", "validate")):
        fake_api.add_admission_webhook(f"{path}.qosgate.io", kind=kind,
                                       url=f"https://127.0.0.1:{served.ports['webhook']}/{path}", ca_pem=ca,
                                       server_hostname="qosgate-webhook.qosgate-system.svc")
    core = k8s.CoreV1Api(fake_api.api_client())

    def gold_pod() -> dict:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-", "annotations": {"qos-resources.qosgate.io": "memory-qos=gold"}},
                "spec": {"containers": [{"name": "app", "image": "web",
                                         "resources": {"requests": {"memory": "1Gi"}}}]}}

    created = core.create_namespaced_pod("team-a", gold_pod())
    # The cluster's catalog ConfigMap is in force (gold protects half the request), not the built-in one.
    assert created.metadata.annotations["qosgate.io/memory-min"] == str(2**29)
    assert created.metadata.annotations["memory.min.memory-qos.nri.io/app"] == str(2**29)
    with pytest.raises(ApiException) as denied:
        core.create_namespaced_pod("team-a", gold_pod())
    assert denied.value.status == 403
    assert "capacity 1/1" in denied.value.body
    labels = 'class="gold",level="pod",namespace="team-a",resource="memory-qos"'

    def usage_exported() -> bool:
        metrics = served.health("/metrics").text
        return f"qosgate_quota_used{{{labels}}} 1.0" in metrics
    eventually(usage_exported, timeout=30)
    metrics = served.health("/metrics").text
    assert f"qosgate_quota_capacity{{{labels}}} 1.0" in metrics
    assert 'qosgate_cache_synced{component="webhook",informer="pods"} 1.0' in metrics
    assert 'qosgate_cache_synced{component="extender",informer="nodes"} 1.0' in metrics
    # protectablePercent 50 from the cluster catalog: half of 8Gi.
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(metrics) for sample in family.samples}
    assert samples[("qosgate_node_protectable_bytes", (("node", "node-1"),))] == 4 * 2**30
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0


def _run(tmp_path: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    environment = {**os.environ, "KUBECONFIG": str(tmp_path / "no-such-kubeconfig"), **(env or {})}
    environment.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run([sys.executable, "-m", "qosgate.cli.main", "serve", *argv, "--cert-dir",
                           str(tmp_path / "certs")], capture_output=True, text=True, timeout=60, check=False,
                          env=environment)


def test_no_cluster_configuration_is_one_line_naming_what_was_tried(tmp_path: Path) -> None:
    """Issue 10 finding 7: `qosgate serve webhook` without --local and without a cluster printed a traceback."""
    result = _run(tmp_path, "webhook")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "no Kubernetes API configuration found" in lines[0] and "--local" not in result.stdout


def test_missing_kubeconfig_file_is_one_line(tmp_path: Path) -> None:
    result = _run(tmp_path, "extender", "--kubeconfig", str(tmp_path / "absent"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr


@pytest.mark.parametrize("argv, message", [
    (["webhook", "--extender-port", "9000"], "--extender-port applies to"),
    (["extender", "--port", "9000", "--extender-port", "9001"], "give one"),
    (["all", "--port", "9000", "--extender-port", "9000"], "cannot share port"),
    (["all", "--port", "70000"], "not a port number"),
])
def test_contradictory_port_flags_are_rejected(tmp_path: Path, argv: list[str], message: str) -> None:
    result = _run(tmp_path, *argv, "--local")
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_serve_extender_port_is_where_it_listens(serve) -> None:
    """Issue 10 finding 7: `serve extender --port N` used to listen on 8444 whatever N was."""
    from tests.support.processes import free_port

    port = free_port()
    served = serve("--local", "--port", str(port), component="extender")
    with https_client(served.cert_dir, port, EXTENDER_HOSTNAME, timeout=10, client_cert=True) as client:
        assert client.get("/healthz").status_code == 200


def test_extender_verbs_refuse_callers_without_a_client_certificate(serve) -> None:
    """Issue 10 finding 2: anyone reaching the port could bind any pending pod to any node."""
    served = serve("--local")
    binding = {"PodName": "victim", "PodNamespace": "team-b", "PodUID": "", "Node": "no-such-node"}
    with https_client(served.cert_dir, served.ports["extender"], EXTENDER_HOSTNAME, timeout=10) as anonymous:
        for verb in ("bind", "filter", "prioritize"):
            response = anonymous.post(f"/{verb}", json=binding)
            assert response.status_code == 401 and "client certificate" in response.json()["Error"]
        assert anonymous.get("/healthz").status_code == 200
