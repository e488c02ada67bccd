"""A catalog edit reaches the running extender replicas through their ConfigMap watch, without a restart:
a lowered protectablePercent stops new placements that no longer fit (it never evicts what is bound), and
restoring it lets them in again."""

from __future__ import annotations

import copy

import yaml

from tests.realcluster.conftest import NodePool
from tests.realcluster.controlplane import ControlPlane, wait_until
from tests.realcluster.helpers import admitted, filter_passes, put_catalog
from tests.realcluster.qosgate_stack import QosgateStack, class_pod


def with_percent(configmap: dict, percent: int) -> dict:
    edited = copy.deepcopy(configmap)
    document = yaml.safe_load(edited["data"]["catalog.yaml"])
    document["protectablePercent"] = percent
    edited["data"]["catalog.yaml"] = yaml.safe_dump(document)
    return edited


def test_a_lowered_protectable_percent_reaches_the_running_extender_without_a_restart(
        control_plane: ControlPlane, qosgate: QosgateStack, node_pool: NodePool) -> None:
    (node,) = node_pool.add(1, memory="8Gi")
    namespace = control_plane.create_namespace("catalog-extender")
    pod = admitted(control_plane, namespace, node_pool.pin(class_pod("six", "gold", memory="6Gi")))
    original = qosgate.rendered("ConfigMap", "qosgate-classes")
    shipped = yaml.safe_load(original["data"]["catalog.yaml"])["protectablePercent"]
    assert shipped == 90
    wait_until(lambda: filter_passes(qosgate, pod, node), 30, "the extender to see the node")  # 6 ≤ 7.2 GiB
    pids = [replica.process.pid for replica in qosgate.extenders]
    try:
        put_catalog(control_plane, qosgate, with_percent(original, 50))  # 4 GiB
        wait_until(lambda: not filter_passes(qosgate, pod, node), 30, "the extender to apply the lowered budget")
    finally:
        put_catalog(control_plane, qosgate, original)
    wait_until(lambda: filter_passes(qosgate, pod, node), 30, "the extender to apply the restored budget")
    assert [replica.process.pid for replica in qosgate.extenders] == pids  # no replica restarted
