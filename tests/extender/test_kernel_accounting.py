"""The extender counts what the kernel will protect (architecture §5.2, §5.3): the kubelet's policy per node, the
node agent's report (its budget, its classes, the protection it observes), and a catalog that changes live."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qosgate.core.catalog import load_catalog_yaml
from qosgate.core.nodereport import NodeReport, lease_object
from qosgate.extender.state import ExtenderSettings, ExtenderState
from qosgate.extender.wiring import ExtenderConfig, settings_from
from qosgate.kube.store import ADDED, DELETED, NodeStore, ObjectStore, PodStore
from tests.extender.memapi import MemoryAPI
from tests.extender.objects import GI, bound, make_node, make_pod

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Clocks:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = NOW

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


def report(node: str, **fields: Any) -> NodeReport:
    values: dict[str, Any] = dict(node=node, observed_at="2026-11-26T12:00:00Z", cgroup_v2=True,
                                  memory_controller=True, recursive_prot=True, kubelet_policy="none",
                                  protectable_bytes=64 * GI, kubepods_min_bytes=0, demanded_bytes=0,
                                  kernel_protected_bytes=0, kernel_protected_now_bytes=0,
                                  outside_kubepods_min_bytes=0, accounted_bytes=0, drift_bytes=0,
                                  overcommit_bytes=0, nri_honoured=True, nri_mismatches=0, offered_classes=None)
    values.update(fields)
    return NodeReport(**values)


def lease(rep: NodeReport, renewed: datetime = NOW, duration: int = 90) -> dict[str, Any]:
    return lease_object(rep, renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), duration)


def guaranteed(name: str, request: str, node: str = "") -> dict[str, Any]:
    pod = make_pod(name, request=request)  # requests == limits
    if node:
        pod = bound(pod, node)
    pod["status"]["qosClass"] = "Guaranteed"  # what the API server sets at creation
    return pod


def world(policy: str = "none", **settings: Any) -> tuple[ExtenderState, PodStore, NodeStore, ObjectStore, Clocks]:
    pods, nodes, reports = PodStore(), NodeStore(), ObjectStore()
    pods.replace([], "1")
    nodes.replace([make_node("n1", protectable="10Gi"), make_node("n2", protectable="10Gi")], "1")
    reports.replace([], "1")
    clocks = Clocks()
    state = ExtenderState(pods, nodes, ExtenderSettings(kubelet_policy=policy, reservation_ttl=60, **settings),
                          clock=lambda: clocks.mono, reports=reports, wall_clock=lambda: clocks.wall)
    return state, pods, nodes, reports, clocks


def test_tiered_node_counts_guaranteed_pods_the_extender_did_not_place() -> None:
    """Issue 11 acceptance: Guaranteed pods placed by another scheduler on a TieredReservation node carry
    memory.min = requests; a class pod that would overcommit the kernel's sum is refused."""
    state, pods, _nodes, reports, _ = world()
    reports.apply(ADDED, lease(report("n1", kubelet_policy="tiered")))
    pods.apply(ADDED, guaranteed("db", "8Gi", node="n1"))
    pods.apply(ADDED, guaranteed("cache", "8Gi", node="n2"))  # n2 has no report: policy none, counts nothing
    result = state.filter(make_pod("gold", 4 * GI), ["n1", "n2"])
    assert result.passed == ["n2"]
    assert result.failed["n1"] == "memory.min 4Gi exceeds the free protectable memory"
    assert state.filter(make_pod("silver", 2 * GI), ["n1"]).passed == ["n1"]  # exactly 2Gi of 10Gi left


def test_the_kernel_observed_sum_counts_even_when_the_ledger_knows_less() -> None:
    state, _pods, _nodes, reports, _ = world()
    reports.apply(ADDED, lease(report("n1", demanded_bytes=9 * GI)))
    result = state.filter(make_pod("p", 2 * GI), ["n1", "n2"])
    assert result.passed == ["n2"] and state.explain_fit(make_pod("p", 2 * GI), "n1").detail == "1Gi of 10Gi free"


def test_the_agents_budget_lowers_the_node_budget_and_zero_means_unenforceable() -> None:
    state, _pods, _nodes, reports, _ = world()
    reports.apply(ADDED, lease(report("n1", protectable_bytes=3 * GI)))
    reports.apply(ADDED, lease(report("n2", protectable_bytes=0, cgroup_v2=False)))
    result = state.filter(make_pod("p", 2 * GI), ["n1", "n2"])
    assert result.passed == ["n1"] and "n2" in result.unresolvable


def test_classes_offered_come_from_the_agent_when_it_reports_them() -> None:
    state, _pods, _nodes, reports, _ = world()
    reports.apply(ADDED, lease(report("n1", offered_classes="memory-qos=gold")))
    reports.apply(ADDED, lease(report("n2", offered_classes="memory-qos=silver")))
    result = state.filter(make_pod("p", GI, classes={"memory-qos": "gold"}), ["n1", "n2"])
    assert result.passed == ["n1"] and "does not offer memory-qos class gold" in result.unresolvable["n2"]


def test_a_stale_report_counts_the_node_with_the_safe_figure() -> None:
    state, pods, _nodes, reports, clocks = world()
    reports.apply(ADDED, lease(report("n1", kubelet_policy="none"), duration=30))
    pods.apply(ADDED, bound(make_pod("burstable", request="8Gi"), "n1"))
    assert state.filter(make_pod("p", 4 * GI), ["n1"]).passed == ["n1"]  # policy none: requests not counted
    clocks.advance(31)
    result = state.filter(make_pod("p", 4 * GI), ["n1"])  # unknown now: every request counts
    assert result.passed == [] and state.explain_fit(make_pod("p", 4 * GI), "n1").detail == "2Gi of 10Gi free"


def test_a_stale_report_keeps_its_kernel_floor_and_budget_cap() -> None:
    # The agent stopped reporting; the protection it last saw stays in the kernel, nobody lowers it.
    state, _pods, _nodes, reports, clocks = world()
    reports.apply(ADDED, lease(report("n1", demanded_bytes=7 * GI, protectable_bytes=9 * GI), duration=30))
    assert state.filter(make_pod("p", 3 * GI), ["n1"]).passed == []  # 7 of 9 GiB held by the kernel
    clocks.advance(31)
    assert state.filter(make_pod("p", 3 * GI), ["n1"]).passed == []  # still: the figures outlive the report
    assert state.filter(make_pod("p", 2 * GI), ["n1"]).passed == ["n1"]
    reports.apply(DELETED, lease(report("n1")))  # the agent is uninstalled: the node's own figures again
    assert state.filter(make_pod("p", 3 * GI), ["n1"]).passed == ["n1"]


def test_a_report_for_another_node_is_ignored() -> None:
    state, _pods, _nodes, reports, _ = world()
    forged = lease(report("n1", protectable_bytes=0))
    forged["spec"]["holderIdentity"] = "n2"  # names n2 but its report speaks for n1
    reports.apply(ADDED, forged)
    assert state.filter(make_pod("p", GI), ["n2"]).passed == ["n2"]  # its zero budget is not believed
    pods = state._pods
    pods.apply(ADDED, bound(make_pod("plain", request="9500Mi"), "n2"))
    assert state.filter(make_pod("p", GI), ["n2"]).passed == []  # but the node counts as unknown: requests count
    reports.apply(DELETED, forged)
    assert state.filter(make_pod("p", GI), ["n2"]).passed == ["n2"]  # back to the catalog's policy (none)


def test_an_admin_label_states_the_policy_where_no_agent_reports() -> None:
    state, pods, nodes, _reports, _ = world()
    labelled = make_node("n1", protectable="10Gi")
    labelled["metadata"]["labels"]["qosgate.io/kubelet-memory-policy"] = "tiered"
    nodes.apply(ADDED, labelled)
    pods.apply(ADDED, guaranteed("db", "8Gi", node="n1"))
    assert state.filter(make_pod("p", 4 * GI), ["n1", "n2"]).passed == ["n2"]


def test_reservations_use_the_figure_of_the_node_they_are_on() -> None:
    state, pods, _nodes, reports, _ = world()
    reports.apply(ADDED, lease(report("n1", kubelet_policy="tiered")))
    api = MemoryAPI(pods)
    pod = guaranteed("g", "6Gi")
    api.create(pod)
    api.deliver()
    assert state.bind("default", "g", pod["metadata"]["uid"], "n1", api) == ""
    assert state.node_usage("n1") == (0, 6 * GI)  # reserved at the tiered figure
    assert state.filter(make_pod("p", 5 * GI), ["n1"]).passed == []


# --- the catalog changes live ----------------------------------------------------------------------------

def test_a_lowered_budget_stops_new_placements_and_never_evicts() -> None:
    state, pods, _nodes, _reports, _ = world()
    pods.apply(ADDED, bound(make_pod("old", 6 * GI), "n1"))
    catalog = load_catalog_yaml("protectablePercent: 10\nresources: [{name: memory-qos, classes: [{name: gold}]}]")
    nodes = NodeStore()
    nodes.replace([make_node("m", allocatable="40Gi")], "1")
    live = ExtenderState(pods, nodes, settings_from(load_catalog_yaml(
        "protectablePercent: 50\nresources: [{name: memory-qos, classes: [{name: gold}]}]"), ExtenderConfig()))
    pods.apply(ADDED, bound(make_pod("m-old", 15 * GI), "m"))
    assert live.filter(make_pod("p", 4 * GI), ["m"]).passed == ["m"]  # 20Gi budget, 15Gi used
    live.set_settings(settings_from(catalog, ExtenderConfig()))
    assert live.filter(make_pod("p", 4 * GI), ["m"]).passed == []  # 4Gi budget now: no new placement
    assert live.node_usage("m") == (15 * GI, 0)  # the committed pod stays counted; nothing is evicted
    assert state.node_usage("n1") == (6 * GI, 0)


def test_switching_to_kubelet_accounting_recounts_every_bound_pod() -> None:
    state, pods, _nodes, _reports, _ = world()
    pods.apply(ADDED, bound(make_pod("plain", request="7Gi"), "n1"))
    assert state.node_usage("n1") == (0, 0)
    kubelet = load_catalog_yaml("backends: [kubelet]\nresources: [{name: memory-qos, classes: [{name: gold}]}]")
    state.set_settings(settings_from(kubelet, ExtenderConfig()))
    assert state.node_usage("n1") == (7 * GI, 0) and state.disagreements() == {}
    assert state.filter(make_pod("p", 4 * GI), ["n1", "n2"]).passed == ["n2"]


@pytest.mark.parametrize("policy, counted", [("none", 0), ("legacy", 3 * GI), ("tiered", 0)])
def test_burstable_pods_count_by_policy(policy: str, counted: int) -> None:
    state, pods, _nodes, _reports, _ = world(policy)
    pod = bound(make_pod("b", request="3Gi"), "n1")
    pod["status"]["qosClass"] = "Burstable"
    pods.apply(ADDED, pod)
    assert state.node_usage("n1") == (counted, 0)
