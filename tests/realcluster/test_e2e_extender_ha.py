"""The extender under kube-scheduler while its replicas come and go: the leader stopped gracefully (Lease
released), restarted, and SIGKILLed (Lease left to expire) in the middle of scheduling waves. A watch checks,
after every bind, that no node's Σ memory.min exceeds its protectable memory.

Four nodes with room for exactly five 256 MiB gold pods each (qosgate.io/protectable-memory) and 64 GiB of
allocatable memory, so kube-scheduler alone would put far more on each: only the extender keeps them apart.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realcluster.conftest import NodePool
from tests.realcluster.controlplane import ControlPlane, Scheduler, wait_until
from tests.realcluster.helpers import delete_pods
from tests.realcluster.qosgate_stack import BindAuditor, QosgateStack, class_pod, quota_configmap

NODES, SLOTS, POD_MI = 4, 5, 256
WAVE = 6


@pytest.fixture(scope="module")
def scheduler(control_plane: ControlPlane, qosgate: QosgateStack) -> Iterator[Scheduler]:
    with control_plane.start_scheduler(qosgate.scheduler_config()) as running:
        yield running


def pending(control_plane: ControlPlane, namespace: str) -> list[dict]:
    items = control_plane.api.get(f"/api/v1/namespaces/{namespace}/pods").json()["items"]
    return [p for p in items if not p["spec"].get("nodeName")]


def test_leader_handovers_and_restarts_mid_run_never_overcommit_a_node(
        control_plane: ControlPlane, qosgate: QosgateStack, scheduler: Scheduler, node_pool: NodePool) -> None:
    namespace = control_plane.create_namespace("ha")
    control_plane.api.post(f"/api/v1/namespaces/{namespace}/configmaps",
                           json=quota_configmap("quota", 100)).raise_for_status()  # the default allows 10 gold
    node_pool.add(NODES, memory="64Gi", protectable=f"{SLOTS * POD_MI}Mi")
    created = 0

    def wave() -> None:
        nonlocal created
        for _ in range(WAVE):
            pod = node_pool.pin(class_pod(f"gold-{created}", "gold", memory=f"{POD_MI}Mi"))
            control_plane.api.post(f"/api/v1/namespaces/{namespace}/pods", json=pod).raise_for_status()
            created += 1

    def leader_index() -> int:
        leader = qosgate.wait_for_extender_leader(60)
        return qosgate.extenders.index(leader)

    try:
        with BindAuditor(control_plane) as audit:
            wave()
            audit.wait_for_binds(WAVE, 60)

            # 1. graceful stop of the leader while a wave is being scheduled: it releases the Lease.
            first = leader_index()
            wave()
            qosgate.extenders[first].process.terminate()
            qosgate.sync_balancers()
            qosgate.wait_for_extender_leader(60)
            audit.wait_for_binds(2 * WAVE, 90)
            qosgate.start_extender(first)  # back as a follower

            # 2. SIGKILL of the leader mid-wave: its Lease must expire before anyone decides again.
            second = leader_index()
            wave()
            qosgate.extenders[second].process.kill()
            qosgate.sync_balancers()
            qosgate.wait_for_extender_leader(60)
            audit.wait_for_binds(3 * WAVE, 90)
            qosgate.start_extender(second)

            # 3. a last wave beyond what the nodes can protect.
            wave()
            audit.wait_for_binds(NODES * SLOTS, 90)
            qosgate.wait_for_extender_leader(60)
            # The pods left over are refused by the filter for want of protectable memory, not placed.
            leftover = wait_until(
                lambda: [p for p in pending(control_plane, namespace)
                         if any("exceeds the free protectable memory" in (c.get("message") or "")
                                for c in p.get("status", {}).get("conditions", []))]
                if len(pending(control_plane, namespace)) == created - NODES * SLOTS else None,
                60, "the pods beyond capacity to be reported unschedulable by qosgate's filter")
            assert len(leftover) == created - NODES * SLOTS

        assert audit.violations == [], audit.violations
        assert audit.binds == NODES * SLOTS
        assert {node: audit.usage.get(node) for node in node_pool.nodes} == \
            {node: SLOTS * POD_MI * 2**20 for node in node_pool.nodes}
        assert audit.errors == []
    finally:
        delete_pods(control_plane, namespace)
        for index, replica in enumerate(qosgate.extenders):
            if not replica.process.running:
                qosgate.start_extender(index)
        qosgate.wait_for_extender_leader(60)
