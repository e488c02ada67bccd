"""The memory.min a pod carries on a node by kubelet policy and qosgate backend (qosgate.core.podprotection)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qosgate.core.cgtree import BESTEFFORT, BURSTABLE, GUARANTEED
from qosgate.core.podprotection import (
    KUBELET_POLICIES,
    kernel_memory_min,
    pod_kernel_memory_min,
    pod_protection,
    pod_qos_class,
    pod_view_from_raw,
)

MiB = 2**20


def pod(containers, annotation: int | None = None, qos: str | None = None, overhead: str | None = None) -> dict:
    spec: dict = {"containers": [{"name": f"c{i}", "resources": r} for i, r in enumerate(containers)]}
    if overhead:
        spec["overhead"] = {"memory": overhead}
    obj: dict = {"metadata": {"uid": "u1", "name": "p", "namespace": "ns"}, "spec": spec, "status": {}}
    if annotation is not None:
        obj["metadata"]["annotations"] = {"qosgate.io/memory-min": str(annotation)}
    if qos:
        obj["status"]["qosClass"] = qos
    return obj


GUARANTEED_POD = pod([{"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}])
BURSTABLE_POD = pod([{"requests": {"memory": "512Mi"}}], annotation=256 * MiB)
BESTEFFORT_POD = pod([{}])


def test_qos_class_from_spec_and_status() -> None:
    assert pod_qos_class(GUARANTEED_POD) == GUARANTEED
    assert pod_qos_class(BURSTABLE_POD) == BURSTABLE
    assert pod_qos_class(BESTEFFORT_POD) == BESTEFFORT
    assert pod_qos_class({**BESTEFFORT_POD, "status": {"qosClass": "Guaranteed"}}) == GUARANTEED
    limits_only = pod([{"limits": {"cpu": "1", "memory": "1Gi"}}])
    assert pod_qos_class(limits_only) == GUARANTEED  # requests default to limits
    assert pod_qos_class(pod([{"requests": {"memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}])) == BURSTABLE


def test_the_policy_table() -> None:
    assert pod_kernel_memory_min(GUARANTEED_POD, "tiered", False) == 1024 * MiB
    assert pod_kernel_memory_min(BURSTABLE_POD, "tiered", False) == 0  # memory.low only
    assert pod_kernel_memory_min(BURSTABLE_POD, "tiered", True) == 256 * MiB
    assert pod_kernel_memory_min(BURSTABLE_POD, "legacy", False) == 512 * MiB
    assert pod_kernel_memory_min(BURSTABLE_POD, "legacy", True) == 512 * MiB  # the max of both
    assert pod_kernel_memory_min(BURSTABLE_POD, "none", True) == 256 * MiB
    assert pod_kernel_memory_min(GUARANTEED_POD, "none", True) == 0
    assert pod_kernel_memory_min(BURSTABLE_POD, "unknown", False) == 512 * MiB  # counted like legacy
    assert pod_kernel_memory_min(BESTEFFORT_POD, "legacy", True) == 0


def test_overhead_counts_and_garbage_is_reported_not_raised() -> None:
    with_overhead = pod([{"requests": {"memory": "100Mi"}}], overhead="10Mi")
    assert pod_kernel_memory_min(with_overhead, "legacy", False) == 110 * MiB
    broken = pod([{"requests": {"memory": "lots"}}], annotation=None)
    broken["metadata"]["annotations"] = {"qosgate.io/memory-min": "nope"}
    result = pod_protection(broken, "legacy", True)
    assert result.memory_min == 0 and len(result.problems) == 2


quantities = st.integers(0, 4096).map(lambda n: n * MiB)


@given(qos=st.sampled_from([GUARANTEED, BURSTABLE, BESTEFFORT]), requests=quantities, ours=quantities,
       protects=st.booleans())
def test_properties_of_the_rule(qos, requests, ours, protects) -> None:
    figures = {p: kernel_memory_min(qos, requests, ours, p, protects) for p in KUBELET_POLICIES}
    assert figures["legacy"] >= figures["tiered"] >= figures["none"]
    assert figures["unknown"] == figures["legacy"]  # unknown nodes are never under-counted
    for value in figures.values():
        assert value >= (ours if protects else 0)
        assert value <= max(requests, ours)
    assert figures["none"] == (ours if protects else 0)


def test_pod_view_reads_nri_annotations_and_running_container_ids() -> None:
    raw = pod([{"requests": {"memory": "64Mi"}}], annotation=64 * MiB)
    raw["metadata"]["annotations"]["memory.min.memory-qos.nri.io/c0"] = str(64 * MiB)
    raw["status"] = {"phase": "Running", "containerStatuses": [
        {"name": "c0", "containerID": "containerd://abc", "state": {"running": {}}},
        {"name": "c1", "containerID": "cri-o://def", "state": {"terminated": {}}}]}
    view = pod_view_from_raw(raw)
    assert view.memory_min == 64 * MiB and view.nri_min == {"c0": 64 * MiB}
    assert view.container_ids == {"c0": "abc"} and view.active and view.qos == BURSTABLE


@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(
                        st.sampled_from(["metadata", "spec", "status", "annotations", "containers", "uid",
                                         "containerStatuses", "qosClass", "phase", "resources"]), c, max_size=4)),
                    max_leaves=12))
def test_pod_view_never_raises(raw) -> None:
    if isinstance(raw, dict):
        pod_view_from_raw(raw)
        pod_protection(raw, "tiered", True)
