"""The agent's API side against the fake apiserver: the report Lease (created, renewed only when due or
changed), over-commit Events, the pod watch waking the loop, and an API that is down."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qosgate.agent.cluster import EventRecorder, LeasePublisher, NodeInfo, PodViewStore, list_pods_once
from qosgate.agent.engine import PassSettings
from qosgate.agent.wiring import AgentConfig, build_agent
from qosgate.core.nodereport import NodeReport, lease_name, read_lease
from qosgate.kube.kubeconfig import ClientConfig
from qosgate.kube.transport import KubeClient
from qosgate.serving.lifecycle import Lifecycle
from tests.agent.faketree import FakeNode, MiB
from tests.support.tls import eventually

NAMESPACES = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
              for n in ("team", "qosgate-system", "default")]


@pytest.fixture
def api(fake_api):
    fake_api.seed(NAMESPACES)
    return fake_api


def report(**changes) -> NodeReport:
    base = NodeReport(node="n1", observed_at="2026-10-01T12:00:00Z", cgroup_v2=True, memory_controller=True,
                      recursive_prot=True, kubelet_policy="none", protectable_bytes=1 << 30, kubepods_min_bytes=0,
                      demanded_bytes=0, kernel_protected_bytes=0, kernel_protected_now_bytes=0,
                      outside_kubepods_min_bytes=0, accounted_bytes=0, drift_bytes=0, overcommit_bytes=0,
                      nri_honoured=None, nri_mismatches=0, offered_classes=None)
    return replace(base, **changes)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def dead_api() -> KubeClient:
    return KubeClient(ClientConfig(server="http://127.0.0.1:9"))  # discard port: connection refused


def test_the_lease_is_written_when_changed_or_due_only(api) -> None:
    fake_api = api
    clock = Clock()
    publisher = LeasePublisher(fake_api.kube_client(), "n1", report_interval=30, clock=clock)
    assert publisher.publish(report())
    lease = stored_lease(fake_api)
    assert lease["spec"]["holderIdentity"] == "n1" and lease["spec"]["leaseDurationSeconds"] == 90
    assert lease["metadata"]["labels"] == {"app.kubernetes.io/name": "qosgate", "qosgate.io/node-report": "true"}
    assert read_lease(lease, "n1", datetime.now(UTC)).usable
    clock.now = 10
    assert not publisher.publish(report(observed_at="2026-10-01T12:00:10Z"))  # nothing material, not due
    assert publisher.publish(report(kubepods_min_bytes=512 * MiB))  # material
    clock.now = 45
    assert publisher.publish(report(kubepods_min_bytes=512 * MiB))  # heartbeat due
    assert publisher.writes == 3


def test_a_lease_left_by_a_previous_run_is_taken_over(api) -> None:
    fake_api = api
    LeasePublisher(fake_api.kube_client(), "n1").publish(report())
    fresh = LeasePublisher(fake_api.kube_client(), "n1")
    assert fresh.publish(report(accounted_bytes=MiB))
    lease = stored_lease(fake_api)
    assert read_lease(lease, "n1", datetime.now(UTC)).report.accounted_bytes == MiB


def test_an_api_that_is_down_is_counted_not_raised() -> None:
    publisher = LeasePublisher(dead_api(), "n1")
    assert not publisher.publish(report()) and publisher.last_error
    EventRecorder(dead_api(), "n1").overcommit("too much")
    assert list_pods_once(dead_api(), "n1").pods() is None
    info = NodeInfo(dead_api(), "n1")
    info.update()
    assert info.configured_budget(90) is None


def test_overcommit_events_are_rate_limited(api) -> None:
    fake_api = api
    clock = Clock()
    events = EventRecorder(fake_api.kube_client(), "n1", clock=clock)
    events.overcommit("kubepods asks 2Gi")
    clock.now = 60
    events.overcommit("kubepods asks 2Gi")
    assert events.sent == 1
    events.overcommit(None)  # cleared: the next over-commit is news again
    events.overcommit("kubepods asks 3Gi")
    assert events.sent == 2
    stored = fake_api.objects("events", "default")
    assert stored[0]["reason"] == "QosgateProtectionOvercommitted"
    assert stored[0]["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "n1"}


def test_node_budget_from_annotation_or_catalog_percent(api) -> None:
    fake_api = api
    fake_api.seed([{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                    "status": {"allocatable": {"memory": "10Gi"}}},
                   {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "annotations": {
                       "qosgate.io/protectable-memory": "3Gi", "qosgate.io/qos-classes": "memory-qos=gold"}},
                    "status": {"allocatable": {"memory": "10Gi"}}}])
    n1, n2 = NodeInfo(fake_api.kube_client(), "n1"), NodeInfo(fake_api.kube_client(), "n2")
    n1.update()
    n2.update()
    assert n1.configured_budget(90) == 9 * 2**30 and n1.admin_offer() is None
    assert n1.configured_budget(50) == 5 * 2**30  # the percent of the catalog in force at this pass
    assert n2.configured_budget(90) == 3 * 2**30 and n2.admin_offer() == "memory-qos=gold"


def stored_lease(fake_api, node: str = "n1"):
    return fake_api.get_object("leases.coordination.k8s.io", "qosgate-system", lease_name(node))


def pod(uid: str, node: str, memory_min: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p-{uid[:4]}", "namespace": "team", "uid": uid,
                         "annotations": {"qosgate.io/memory-min": str(memory_min)}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"memory": "1Gi"}}}]},
            "status": {"phase": "Pending", "qosClass": "Burstable"}}


def start_agent(fake_api, tmp_path: Path, interval: float) -> tuple[FakeNode, Lifecycle]:
    """`qosgate agent` for node n1 on a fake cgroup tree, against the fake API; the caller stops the lifecycle."""
    node = FakeNode(tmp_path)
    config = AgentConfig(settings=PassSettings("n1"), cgroup_root=str(node.root), proc_root=str(node.proc),
                         nri_config=None, state_file=str(tmp_path / "state.json"), interval=interval,
                         report_interval=30, nri_configmap=None)
    lifecycle = Lifecycle()
    build_agent(config, lifecycle, fake_api.kube_client())
    return node, lifecycle


def test_the_running_agent_pre_provisions_a_pod_bound_to_its_node_and_publishes(api, tmp_path: Path) -> None:
    fake_api = api
    fake_api.seed([{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                    "status": {"allocatable": {"memory": "8Gi"}}}])
    node, lifecycle = start_agent(fake_api, tmp_path, interval=30)
    try:
        eventually(lambda: stored_lease(fake_api) is not None, timeout=10)
        uid = "0b5d1f2e-7c3a-4e8b-9d6f-1a2b3c4d5e6f"
        fake_api.seed([pod(uid, "n1", 256 * MiB), pod("1b5d1f2e-7c3a-4e8b-9d6f-1a2b3c4d5e6f", "n2", 512 * MiB)])
        # the watch wakes the loop long before the 30 s interval
        eventually(lambda: node.min(node.qos_path("burstable")) == 256 * MiB, timeout=10)
        assert lifecycle.readiness()
        lease = eventually(lambda: (lease := stored_lease(fake_api))
                           and read_lease(lease, "n1", datetime.now(UTC)).report.accounted_bytes == 256 * MiB
                           and lease, timeout=10)
        assert read_lease(lease, "n1", datetime.now(UTC)).report.protectable_bytes == int(8 * 2**30 * 0.9)
    finally:
        lifecycle.stop()


def catalog_configmap(protectable_percent: int) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "qosgate-classes", "namespace": "qosgate-system"},
            "data": {"catalog.yaml": f"protectablePercent: {protectable_percent}\nresources: [{{name: memory-qos, "
                                     "classes: [{name: gold, memoryMinPercent: 100}]}]\n"}}


def test_the_running_agent_follows_a_catalog_edit_without_a_restart(api, tmp_path: Path) -> None:
    fake_api = api
    fake_api.seed([{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                    "status": {"allocatable": {"memory": "8Gi"}}}, catalog_configmap(50)])
    _node, lifecycle = start_agent(fake_api, tmp_path, interval=300)

    def published_budget() -> int | None:
        lease = stored_lease(fake_api)
        return read_lease(lease, "n1", datetime.now(UTC)).report.protectable_bytes if lease else None

    try:
        eventually(lambda: published_budget() == 4 * 2**30, timeout=10)  # read at start: 50 % of 8 GiB
        fake_api.seed([catalog_configmap(75)])
        # the edit wakes the pass loop: well before the 300 s interval
        eventually(lambda: published_budget() == 6 * 2**30, timeout=10)
    finally:
        lifecycle.stop()


def test_pod_store_wakes_only_on_changes() -> None:
    calls = []
    store = PodViewStore(on_change=lambda: calls.append(1))
    assert store.pods() is None
    raw = pod("0b5d1f2e-7c3a-4e8b-9d6f-1a2b3c4d5e6f", "n1", MiB)
    store.replace([raw], "1")
    store.apply("MODIFIED", raw)
    store.apply("DELETED", raw)
    assert len(calls) == 2 and store.pods() == []
