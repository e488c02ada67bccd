"""Second-scheduler mode on the real control plane (managed clusters: kube-scheduler is not yours to configure).

Two kube-schedulers run side by side: the default one, untouched (no extender), and `qosgate-scheduler` —
upstream kube-scheduler with manifests/overlays/second-scheduler/kube-scheduler-config.yaml, authenticating
as the overlay's ServiceAccount with the overlay's RBAC, leader-elected on its own Lease. The catalog says
`scheduling: {schedulerName: qosgate-scheduler, routeKubeletProtected: true}` and `kubeletPolicy: tiered`
(the kubelet protects Guaranteed pods' requests itself, KEP-2570 TieredReservation).

How the two are kept from overcommitting a node between them (the lead's design, manifests/README.md §3):
every pod whose memory.min the kernel will hold — class pods, and Guaranteed pods under TieredReservation —
is routed by the mutating webhook to `qosgate-scheduler`, and the extender also counts protected pods bound
by anyone. The audit below counts what the kernel would hold (qosgate.core.podprotection, policy tiered).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qosgate.core.podprotection import pod_kernel_memory_min
from tests.realcluster.conftest import NodePool
from tests.realcluster.controlplane import ControlPlane, Scheduler, wait_until
from tests.realcluster.helpers import annotations, delete_pods, make_tenant, metric, put_catalog
from tests.realcluster.qosgate_stack import (
    MEMORY_MIN,
    BindAuditor,
    QosgateStack,
    class_pod,
    loopback_webhook_configuration,
    quota_configmap,
)
from tests.support.kustomize import render

SECOND = "qosgate-scheduler"
MI = 2**20


# An install overlay with manifests/components/route-kubelet-protected: the mutating webhook also sees plain
# Guaranteed pods, so routeKubeletProtected can give them to qosgate-scheduler.
ROUTING_OVERLAY = Path(__file__).resolve().parents[1] / "manifests" / "overlays" / "route-kubelet-protected"


def register_mutating_webhook(control_plane: ControlPlane, qosgate: QosgateStack, objects: list[dict[str, Any]],
                              routed: bool) -> None:
    """Apply the (loopback-rewritten) MutatingWebhookConfiguration and wait until kube-apiserver uses it: a
    dry-run Guaranteed pod comes back routed to qosgate-scheduler, or not."""
    ca_pem = (qosgate.cert_dir / "ca.crt").read_bytes()
    qosgate.apply([loopback_webhook_configuration(o, qosgate.webhook_balancer.port, ca_pem)
                   for o in objects if o["kind"] == "MutatingWebhookConfiguration"])
    probe = f"/api/v1/namespaces/{qosgate.probe_namespace()}/pods"
    pod = guaranteed_pod("routing-probe")
    pod["spec"].pop("schedulerName", None)  # as a user writes it: the webhook may route it

    def in_force() -> bool:
        answer = control_plane.api.post(probe, params={"dryRun": "All"}, json=pod)
        return answer.status_code == 201 and (answer.json()["spec"]["schedulerName"] == SECOND) == routed

    wait_until(in_force, 60, "kube-apiserver to use the mutating webhook configuration", interval=0.25)


@pytest.fixture(scope="module")
def second_mode(control_plane: ControlPlane, qosgate: QosgateStack) -> Iterator[None]:
    original = qosgate.rendered("ConfigMap", "qosgate-classes")
    edited = json.loads(json.dumps(original))
    document = yaml.safe_load(edited["data"]["catalog.yaml"])
    document["kubeletPolicy"] = "tiered"
    document["scheduling"] = {"schedulerName": SECOND, "routeKubeletProtected": True}
    edited["data"]["catalog.yaml"] = yaml.safe_dump(document)
    put_catalog(control_plane, qosgate, edited)
    register_mutating_webhook(control_plane, qosgate, render(ROUTING_OVERLAY), routed=True)
    try:
        yield
    finally:
        register_mutating_webhook(control_plane, qosgate, qosgate.objects, routed=False)
        put_catalog(control_plane, qosgate, original)


@pytest.fixture(scope="module")
def schedulers(control_plane: ControlPlane, qosgate: QosgateStack, second_mode: None) -> Iterator[
        tuple[Scheduler, Scheduler]]:
    """The default scheduler (default configuration) and qosgate-scheduler (the overlay's configuration)."""
    kubeconfig = qosgate.install_second_scheduler_rbac()
    with control_plane.start_scheduler() as default, \
            control_plane.start_scheduler(qosgate.scheduler_config(second=True), leader_elect=True,
                                          kubeconfig=kubeconfig) as second:
        wait_until(lambda: control_plane.api.get(
            "/apis/coordination.k8s.io/v1/namespaces/qosgate-system/leases/qosgate-scheduler").status_code == 200,
            60, "qosgate-scheduler to take its Lease")
        yield default, second


def guaranteed_pod(name: str, memory: str = "256Mi") -> dict[str, Any]:
    pod = class_pod(name, None, memory=memory, limit=memory)
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m", "memory": memory},
                                                 "limits": {"cpu": "100m", "memory": memory}}
    return pod


def scheduled_by(control_plane: ControlPlane, namespace: str, pod: str) -> str:
    """The reporting controller of the pod's Scheduled event (the profile's schedulerName)."""
    events = control_plane.api.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events").json()["items"]
    for event in events:
        if event.get("reason") == "Scheduled" and event["regarding"]["name"] == pod:
            return event.get("reportingController", "")
    return ""


def test_class_pods_are_routed_to_qosgate_scheduler_and_placed_through_the_extender(
        control_plane: ControlPlane, qosgate: QosgateStack, schedulers: tuple[Scheduler, Scheduler],
        node_pool: NodePool) -> None:
    tenant = make_tenant(control_plane)
    node_pool.add(memory="256Gi", protectable="0")  # the default scoring's favourite, useless to qosgate
    fits = node_pool.add(memory="8Gi")[0]
    binds = sum(metric(r.process.metrics(), "qosgate_extender_requests_total", verb="bind", outcome="bound")
                for r in qosgate.extenders)
    created = tenant.http.post(f"/api/v1/namespaces/{tenant.namespace}/pods",
                               json=node_pool.pin(class_pod("web", "gold", memory="256Mi")))
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["schedulerName"] == SECOND
    assert annotations(created.json())[MEMORY_MIN] == str(256 * MI)
    assert control_plane.wait_for_pod_bound(tenant.namespace, "web") == fits
    wait_until(lambda: scheduled_by(control_plane, tenant.namespace, "web"), 10, "the Scheduled event")
    assert scheduled_by(control_plane, tenant.namespace, "web") == SECOND
    wait_until(lambda: sum(metric(r.process.metrics(), "qosgate_extender_requests_total", verb="bind",
                                  outcome="bound") for r in qosgate.extenders) > binds, 10, "the extender's bind")


def test_class_pods_sent_to_another_scheduler_or_preset_to_a_node_are_refused(
        control_plane: ControlPlane, qosgate: QosgateStack, second_mode: None) -> None:
    tenant = make_tenant(control_plane)
    pods = f"/api/v1/namespaces/{tenant.namespace}/pods"
    elsewhere = tenant.http.post(pods, json=class_pod("elsewhere", "gold", scheduler="my-scheduler"))
    assert elsewhere.status_code == 403
    assert "spec.schedulerName is 'my-scheduler'" in elsewhere.json()["message"]
    preset = class_pod("preset", "gold")
    preset["spec"]["nodeName"] = "some-node"
    answer = tenant.http.post(pods, json=preset)
    assert answer.status_code == 403 and "spec.nodeName is preset" in answer.json()["message"]
    # An explicit default-scheduler cannot be told from the apiserver's default: it is routed too.
    explicit = tenant.http.post(pods, json=class_pod("explicit", "gold", scheduler="default-scheduler"))
    assert explicit.status_code == 201 and explicit.json()["spec"]["schedulerName"] == SECOND


def test_pods_without_classes_never_wait_on_the_extender(
        control_plane: ControlPlane, qosgate: QosgateStack, schedulers: tuple[Scheduler, Scheduler],
        node_pool: NodePool) -> None:
    tenant = make_tenant(control_plane)
    node_pool.add(2, memory="16Gi")
    pods = f"/api/v1/namespaces/{tenant.namespace}/pods"
    backends = qosgate.extender_backends()
    qosgate.extender_balancer.set_backends([])  # the extender Service has no endpoints
    qosgate.extender_balancer.probe_now()
    try:
        tenant.http.post(pods, json=node_pool.pin(class_pod("gold", "gold"))).raise_for_status()
        burstable = tenant.http.post(pods, json=node_pool.pin(class_pod("burstable", None, memory="128Mi")))
        best_effort = class_pod("best-effort", None)
        best_effort["spec"]["containers"][0]["resources"] = {}
        tenant.http.post(pods, json=node_pool.pin(best_effort)).raise_for_status()
        assert burstable.json()["spec"]["schedulerName"] == "default-scheduler"
        for name in ("burstable", "best-effort"):
            control_plane.wait_for_pod_bound(tenant.namespace, name, timeout=30)
            assert scheduled_by(control_plane, tenant.namespace, name) in ("", "default-scheduler")

        def extender_error() -> str:
            pod = control_plane.api.get(f"{pods}/gold").json()
            assert not pod["spec"].get("nodeName"), "a class pod was placed without the extender"
            return next((c.get("message", "") for c in pod["status"].get("conditions", [])
                         if c["type"] == "PodScheduled" and c["status"] == "False"), "")

        message = wait_until(extender_error, 30, "qosgate-scheduler to report the unreachable extender")
        assert f'Post "{qosgate.extender_url}/filter"' in message, message
    finally:
        qosgate.extender_balancer.set_backends(backends)
        qosgate.extender_balancer.probe_now()
    # Once the extender is back, the class pod is placed (after kube-scheduler's back-off).
    control_plane.wait_for_pod_bound(tenant.namespace, "gold", timeout=60)


def test_guaranteed_pods_without_a_class_are_routed_to_qosgate_scheduler_when_the_catalog_says_so(
        control_plane: ControlPlane, qosgate: QosgateStack, second_mode: None, node_pool: NodePool) -> None:
    tenant = make_tenant(control_plane)
    node_pool.add(memory="8Gi")
    created = tenant.http.post(f"/api/v1/namespaces/{tenant.namespace}/pods",
                               json=node_pool.pin(guaranteed_pod("db")))
    assert created.status_code == 201, created.text
    assert created.json()["status"]["qosClass"] == "Guaranteed"
    assert created.json()["spec"]["schedulerName"] == SECOND


def test_a_mix_of_class_guaranteed_and_burstable_pods_never_overcommits_a_node(
        control_plane: ControlPlane, qosgate: QosgateStack, schedulers: tuple[Scheduler, Scheduler],
        node_pool: NodePool) -> None:
    """Class pods first fill the nodes through the extender; then Guaranteed pods (kernel memory.min = their
    requests under TieredReservation) and Burstable pods (none) arrive. 3 nodes × 5 slots of 256 MiB, 10 class
    + 10 Guaranteed pods want 20 slots: a correct split places 15 protected pods and leaves 5 pending."""
    tenant = make_tenant(control_plane)
    control_plane.api.post(f"/api/v1/namespaces/{tenant.namespace}/configmaps",
                           json=quota_configmap("quota", 100)).raise_for_status()
    node_pool.add(3, memory="64Gi", protectable=f"{5 * 256}Mi")
    pods = f"/api/v1/namespaces/{tenant.namespace}/pods"

    def kernel_min(pod: dict[str, Any]) -> int:
        return pod_kernel_memory_min(pod, "tiered", True)

    try:
        with BindAuditor(control_plane, extra_counted=kernel_min) as audit:
            for index in range(10):
                tenant.http.post(pods, json=node_pool.pin(class_pod(f"class-{index}", "gold", memory="256Mi"))
                                 ).raise_for_status()
            audit.wait_for_binds(10, 60)
            for index in range(10):
                tenant.http.post(pods, json=node_pool.pin(guaranteed_pod(f"guaranteed-{index}"))).raise_for_status()
                tenant.http.post(pods, json=node_pool.pin(class_pod(f"burstable-{index}", None, memory="256Mi"))
                                 ).raise_for_status()
            # 15 protected + 10 burstable can be placed; wait until the schedulers settle.
            wait_until(lambda: audit.binds >= 25 or audit.violations, 60, "the schedulers to place what fits")
        assert audit.violations == [], [f"{v.node}: {v.pod} → {v.protected} > {v.protectable}"
                                        for v in audit.violations[:5]]
    finally:
        delete_pods(control_plane, tenant.namespace)
