"""The rendered manifests on a real kube-apiserver and kube-scheduler (tests/realcluster's binaries).

On a control plane of its own (the shared `control_plane` fixture must not get fail-closed webhooks pointing
at nowhere): the self-signed install and the second scheduler are applied server-side, exactly as rendered;
then the second scheduler runs as its own ServiceAccount (so its RBAC is what upstream kube-scheduler needs)
with its shipped configuration, and places a pod through a real `qosgate serve extender` running as the
extender's ServiceAccount — the TLS pinned to the CA, kube-scheduler's client certificate from
`qosgate certs generate`, the binding done by the extender.
"""

from __future__ import annotations

import base64
import itertools
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.manifests.conftest import run_qosgate
from tests.manifests.helpers import EXTENDER, GENERATED, NAMESPACE, SCHEDULER, SECOND_SCHEDULER_CONFIG, manifests_copy
from tests.realcluster.controlplane import ControlPlane, wait_until
from tests.support.kustomize import render_text
from tests.support.processes import launcher
from tests.support.tls import https_client

pytestmark = pytest.mark.real_cluster


@pytest.fixture(scope="module")
def installed(control_plane_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Path]]:
    """(a control plane with the self-signed install and the second scheduler applied, the generated/ folder)."""
    root = manifests_copy(tmp_path_factory.mktemp("real"))
    overlay = root / "manifests" / "overlays" / "self-signed"
    assert run_qosgate(["qosgate", "certs", "generate", "--out", str(overlay / GENERATED)], root).returncode == 0
    with ControlPlane(tmp_path_factory.mktemp("control-plane"), control_plane_bin).start() as cp:
        for folder in (overlay, root / "manifests" / "overlays" / "second-scheduler"):
            rendered = folder.parent / f"{folder.name}.rendered.yaml"
            rendered.write_text(render_text(folder))
            cp.kubectl("apply", "--server-side", "--field-manager=qosgate-test", "-f", str(rendered))
        yield cp, overlay / GENERATED


def test_the_api_server_accepts_the_install_and_decodes_the_ca_bundle(installed: tuple[ControlPlane, Path]) -> None:
    cp, generated = installed
    ca = (generated / "ca.crt").read_bytes()
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        config = cp.api.get(f"/apis/admissionregistration.k8s.io/v1/{kind}/qosgate").raise_for_status().json()
        assert config["webhooks"]
        assert all(base64.b64decode(hook["clientConfig"]["caBundle"]) == ca for hook in config["webhooks"])
    secret = cp.api.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/qosgate-scheduler-client").raise_for_status().json()
    assert base64.b64decode(secret["data"]["tls.crt"]) == (generated / "client.crt").read_bytes()


@pytest.fixture(scope="module")
def extender_url(installed: tuple[ControlPlane, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`qosgate serve extender` on loopback as ServiceAccount qosgate-system/qosgate-extender, serving the
    generated certificate and requiring client certificates from the generated CA."""
    cp, generated = installed
    directory = tmp_path_factory.mktemp("extender")
    shutil.copytree(generated, directory / "certs")
    kubeconfig = cp.service_account_kubeconfig(NAMESPACE, EXTENDER, expiration_seconds=7200)
    # A new leader turns ready once its pod watch has caught up with the API (qosgate.kube.leader.
    # CatchUpBarrier); on a quiet cluster that waits for a watch bookmark (~1 min). Pod events move it too.
    namespace = cp.create_namespace("nudge")
    ready = threading.Event()

    def nudge() -> None:
        for number in itertools.count():
            if ready.wait(1.0):
                return
            cp.api.post(f"/api/v1/namespaces/{namespace}/pods", json={
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"nudge-{number}"},
                "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "c"}]}})

    nudger = threading.Thread(target=nudge, daemon=True)
    nudger.start()
    with launcher(directory) as serve:
        try:
            served = serve.start("--kubeconfig", str(kubeconfig), "--leader-elect", "--no-generate-certs",
                                 component="extender", ready_timeout=60)
        finally:
            ready.set()
            nudger.join()
        yield f"https://127.0.0.1:{served.ports['extender']}"


def scheduler_config(generated: Path, url: str) -> dict[str, Any]:
    """The shipped configuration, with the Service URL replaced by the loopback extender (the certificate is
    still checked against the Service name: serverName) and the Secret's mount by the generated files."""
    config = yaml.safe_load(SECOND_SCHEDULER_CONFIG.read_text())
    (extender,) = config["extenders"]
    extender["urlPrefix"] = url
    extender["tlsConfig"].update(caFile=str(generated / "ca.crt"), certFile=str(generated / "client.crt"),
                                 keyFile=str(generated / "client.key"))
    return config


def test_second_scheduler_places_its_pods_through_the_extender(installed: tuple[ControlPlane, Path],
                                                               extender_url: str) -> None:
    cp, generated = installed
    kubeconfig = cp.service_account_kubeconfig(NAMESPACE, SCHEDULER, expiration_seconds=7200)
    scheduler = cp.start_scheduler(scheduler_config(generated, extender_url), leader_elect=True,
                                   kubeconfig=kubeconfig)
    try:
        lease = wait_until(lambda: cp.api.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{SCHEDULER}").json().get("spec", {}).get(
            "holderIdentity"), 60, "the second scheduler's Lease")
        assert lease
        cp.create_node("node-a", memory="8Gi")
        namespace = cp.create_namespace("second")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "routed"},
               "spec": {"schedulerName": SCHEDULER, "containers": [
                   {"name": "app", "image": "app", "resources": {"requests": {"memory": "1Gi"}}}]}}
        cp.api.post(f"/api/v1/namespaces/{namespace}/pods", json=pod).raise_for_status()
        assert cp.wait_for_pod_bound(namespace, "routed", timeout=60) == "node-a"
        events = cp.api.get(f"/api/v1/namespaces/{namespace}/events").raise_for_status().json()["items"]
        assert any(e.get("reason") == "Scheduled" and SCHEDULER in (e.get("reportingComponent"),
                                                                    e.get("source", {}).get("component"))
                   for e in events), events
        log = scheduler.log.read_text()
        assert "forbidden" not in log.lower(), "the mirrored RBAC lacks something kube-scheduler uses:\n" + "\n".join(
            line for line in log.splitlines() if "forbidden" in line.lower())
    finally:
        scheduler.stop()


def test_extender_refuses_a_caller_without_the_client_certificate(installed: tuple[ControlPlane, Path],
                                                                   extender_url: str) -> None:
    """What the install's client certificate is for: without it, /bind is refused (with it, answered)."""
    _, generated = installed
    port = int(extender_url.rsplit(":", 1)[1])
    binding = {"PodName": "nobody", "PodNamespace": "default", "PodUID": "", "Node": "node-a"}
    with https_client(generated, port, f"{EXTENDER}.{NAMESPACE}.svc", timeout=10) as anonymous:
        try:
            status = anonymous.post("/bind", json=binding).status_code
        except httpx.HTTPError:
            status = 0  # refused during the handshake: as good
    assert status in {0, 401, 403}
    with https_client(generated, port, f"{EXTENDER}.{NAMESPACE}.svc", timeout=10, client_cert=True) as scheduler:
        assert scheduler.post("/bind", json=binding).status_code == 200  # answered (the pod does not exist)
