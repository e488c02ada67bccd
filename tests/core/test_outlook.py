"""What the kernel protects per kubelet policy, with and without the node agent (qosgate.core.outlook)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from qosgate.core.catalog import Catalog, parse_catalog
from qosgate.core.compile import compile_pod
from qosgate.core.outlook import outlook, policy_outlook

GI = 2**30
MI = 2**20


def catalog(*backends: str) -> Catalog:
    raw: dict[str, Any] = {"backends": list(backends), "resources": [{"name": "memory-qos", "classes": [
        {"name": "gold", "memoryMinPercent": 100, "koordinatorQoSClass": "LSR"},
        {"name": "silver", "memoryMinPercent": 50, "throttlePercent": 90},
    ]}]}
    if "kubelet" in backends:
        raw["kubeletPolicy"] = "legacy"
    return parse_catalog(raw)


def container(name: str, request: int, limit: int | None = None, cpu: str | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"memory": str(request)}}
    if limit is not None:
        resources["limits"] = {"memory": str(limit)}
    if cpu is not None:
        resources["requests"]["cpu"] = cpu
        resources.setdefault("limits", {})["cpu"] = cpu
    return {"name": name, "image": "x", "resources": resources}


def pod(*containers: dict[str, Any], klass: str | None = "gold") -> dict[str, Any]:
    annotations = {"qos-resources.qosgate.io": f"memory-qos={klass}"} if klass else {}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": annotations},
            "spec": {"containers": list(containers)}}


def view(manifest: dict[str, Any], cat: Catalog, policy: str):  # type: ignore[no-untyped-def]
    return policy_outlook(manifest, compile_pod(manifest, cat), cat, policy)


def test_nri_alone_on_a_burstable_pod_protects_nothing_without_the_agent() -> None:
    found = view(pod(container("app", GI, 2 * GI)), catalog("nri-memory-qos"), "none")
    (app,) = found.containers
    assert (app.carries, app.writer, app.without_agent, app.with_agent) == (GI, "nri-memory-qos", 0, GI)
    assert found.qos_class == "Burstable" and "memory.min 0" in found.reason


def test_tiered_policy_still_leaves_a_burstable_pod_slice_at_zero() -> None:
    found = view(pod(container("app", GI, 2 * GI)), catalog("nri-memory-qos"), "tiered")
    assert found.containers[0].without_agent == 0 and found.pod_slice_without_agent == 0


def test_tiered_policy_protects_a_guaranteed_pod_slice_by_itself() -> None:
    guaranteed = pod(container("app", GI, GI, cpu="1"))
    found = view(guaranteed, catalog("nri-memory-qos"), "tiered")
    assert found.qos_class == "Guaranteed"
    assert found.pod_slice_without_agent == GI and found.containers[0].without_agent == GI


def test_legacy_policy_covers_the_pod_slice_with_its_requests() -> None:
    found = view(pod(container("app", GI, 2 * GI), klass="silver"), catalog("nri-memory-qos"), "legacy")
    (app,) = found.containers
    assert app.carries == GI // 2 and app.without_agent == GI // 2
    assert found.accounted == GI  # the extender counts the larger writer: the kubelet's requests


def test_koordlet_raises_the_ancestors_so_the_agent_adds_nothing() -> None:
    found = view(pod(container("app", GI, 2 * GI)), catalog("koordinator"), "none")
    assert found.containers[0].without_agent == found.containers[0].with_agent == GI
    assert "koordlet" in found.reason


def test_kubelet_backend_writes_requests_on_the_container() -> None:
    found = view(pod(container("app", GI, 2 * GI), klass=None), catalog("kubelet"), "legacy")
    assert (found.containers[0].carries, found.containers[0].writer) == (GI, "kubelet")


def test_a_pod_without_classes_under_policy_none_carries_nothing() -> None:
    found = view(pod(container("app", GI), klass=None), catalog("nri-memory-qos"), "none")
    assert found.containers[0].carries == 0 and found.accounted == 0
    assert found.reason == "nothing asks for memory.min"


def test_every_shown_policy_gets_one_entry_in_order() -> None:
    manifest = pod(container("app", GI, 2 * GI))
    cat = catalog("nri-memory-qos")
    assert [o.policy for o in outlook(manifest, compile_pod(manifest, cat), cat)] == ["none", "tiered", "legacy"]


@given(requests=st.lists(st.integers(min_value=1, max_value=64) , min_size=1, max_size=5),
       policy=st.sampled_from(["none", "tiered", "legacy"]),
       backend=st.sampled_from(["nri-memory-qos", "koordinator"]),
       klass=st.sampled_from(["gold", "silver", None]))
def test_without_the_agent_never_exceeds_the_container_or_its_pod_slice(
        requests: list[int], policy: str, backend: str, klass: str | None) -> None:
    manifest = pod(*(container(f"c{i}", r * 64 * MI, r * 128 * MI) for i, r in enumerate(requests)), klass=klass)
    cat = catalog(backend)
    found = view(manifest, cat, policy)
    assert all(c.without_agent <= c.carries == c.with_agent for c in found.containers)
    assert sum(c.without_agent for c in found.containers) <= max(found.pod_slice_without_agent, 0)
