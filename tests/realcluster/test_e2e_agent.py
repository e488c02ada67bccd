"""The node agent end to end on the real control plane: ``qosgate agent`` runs as the DaemonSet would (its
pod bound to the node, a pod-bound token under the shipped RBAC and admission policy), on a cgroup tree laid
out as a node's (tests/agent/faketree; the kernel side is proven in tests/kernel).

What only the whole chain shows:

- memory.min the kubelet set by itself (a Guaranteed pod's container, unknown to qosgate's accounting) is
  seen by the agent, published in the node's report Lease, and counted by the extender: the real
  kube-scheduler is refused a gold pod that fits the node by annotations alone;
- a gold pod the real kube-scheduler binds to the node is picked up from the agent's pod watch and its
  protection provisioned before its cgroup exists; the report then accounts for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qosgate.core.nodereport import NodeReport, lease_name, read_lease
from tests.agent.faketree import FakeNode
from tests.realcluster.conftest import NodePool
from tests.realcluster.controlplane import ControlPlane, Scheduler, wait_until
from tests.realcluster.helpers import admitted, delete_pods, filter_passes
from tests.realcluster.qosgate_stack import SYSTEM_NAMESPACE, BindAuditor, QosgateStack, class_pod

GI = 2**30
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NAMESPACE}/leases"


@pytest.fixture(scope="module")
def scheduler(control_plane: ControlPlane, qosgate: QosgateStack) -> Iterator[Scheduler]:
    with control_plane.start_scheduler(qosgate.scheduler_config()) as running:
        yield running


def published(cp: ControlPlane, node: str) -> NodeReport | None:
    """The node's report as the extender reads it (fresh and valid), else None."""
    response = cp.api.get(f"{LEASES}/{lease_name(node)}")
    if response.status_code != 200:
        return None
    reading = read_lease(response.json(), node, datetime.now(UTC))
    return reading.report if reading.usable else None


def test_the_agent_reports_what_the_kubelet_protects_and_the_scheduler_counts_it(
        control_plane: ControlPlane, qosgate: QosgateStack, scheduler: Scheduler, node_pool: NodePool,
        tmp_path: Path) -> None:
    cp = control_plane
    (node,) = node_pool.add(1, memory="8Gi")  # budget: 90 % of 8 GiB = 7.2 GiB
    tree = FakeNode(tmp_path / node, total_memory=16 * GI)
    # A Guaranteed pod's container whose memory.min the kubelet set (KEP-2570): no qosgate annotation.
    tree.pod("guaranteed", (2 * GI,))
    namespace = cp.create_namespace("agent-e2e")
    qosgate.start_agent(node, tree.root, tree.proc)
    try:
        report = wait_until(lambda: (r := published(cp, node)) is not None and r.demanded_bytes == 2 * GI and r,
                            30, "the agent's first report")
        assert report.protectable_bytes == int(8 * GI * 0.9)
        assert tree.min(tree.kdir) == 2 * GI  # every ancestor carries it: kubepods covers its children

        big = admitted(cp, namespace, node_pool.pin(class_pod("big", "gold", memory="6Gi")))
        # 6 GiB fits 7.2 GiB by annotations alone; with the kubelet's 2 GiB counted it does not.
        wait_until(lambda: not filter_passes(qosgate, big, node), 30, "the extender to count the agent's report")

        with BindAuditor(cp) as audit:
            cp.api.post(f"/api/v1/namespaces/{namespace}/pods",
                        json=node_pool.pin(class_pod("big", "gold", memory="6Gi"))).raise_for_status()
            cp.api.post(f"/api/v1/namespaces/{namespace}/pods",
                        json=node_pool.pin(class_pod("fits", "gold", memory="4Gi"))).raise_for_status()
            assert cp.wait_for_pod_bound(namespace, "fits", timeout=60) == node
            big_now = cp.api.get(f"/api/v1/namespaces/{namespace}/pods/big").json()
            assert not big_now["spec"].get("nodeName"), "bound beyond what the node's kernel can protect"

            # The agent's pod watch sees the bind: the burstable tier is provisioned for the 4 GiB before the
            # kubelet creates the pod's cgroup, and the next report accounts for it.
            wait_until(lambda: tree.min(tree.qos_path("burstable")) == 4 * GI, 30,
                       "the agent to provision the bound pod's protection")
            after = wait_until(lambda: (r := published(cp, node)) is not None and r.accounted_bytes == 4 * GI and r,
                               30, "the report to account for the bound gold pod")
            assert after.demanded_bytes == 6 * GI and tree.min(tree.kdir) == 6 * GI
        assert audit.violations == [], audit.violations
    finally:
        qosgate.stop_agent(node)
        delete_pods(cp, namespace)
