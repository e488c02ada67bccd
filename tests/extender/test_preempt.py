"""preemptVerb: only nodes where evicting the scheduler's victims frees enough protectable memory survive."""

from __future__ import annotations

import asyncio

import orjson

from qosgate.extender.app import extender_routes
from qosgate.extender.state import ExtenderSettings, ExtenderState
from qosgate.kube.store import ADDED, NodeStore, PodStore
from qosgate.serving.http import Request, Router
from tests.extender.memapi import MemoryAPI
from tests.extender.objects import GI, bound, make_node, make_pod


def world() -> tuple[ExtenderState, PodStore]:
    pods, nodes = PodStore(), NodeStore()
    pods.replace([], "1")
    nodes.replace([make_node("a", protectable="10Gi"), make_node("b", protectable="10Gi"),
                   make_node("g", protectable="10Gi", classes="memory-qos=gold:1")], "1")
    return ExtenderState(pods, nodes, ExtenderSettings()), pods


def test_keeps_only_nodes_where_the_victims_free_enough() -> None:
    state, pods = world()
    for name, size, node in (("a-small", 2, "a"), ("a-big", 6, "a"), ("b-small", 2, "b"), ("b-other", 7, "b")):
        pods.apply(ADDED, bound(make_pod(name, size * GI, uid=name), node))
    pod = make_pod("urgent", 5 * GI)
    kept = state.preempt(pod, {"a": (["a-big"], 0), "b": (["b-small"], 1)})
    # a: 8Gi used − 6Gi freed + 5Gi ≤ 10Gi; b: 9Gi − 2Gi + 5Gi > 10Gi.
    assert kept == {"a": (["a-big"], 0)}


def test_class_slots_freed_by_victims_count() -> None:
    state, pods = world()
    pods.apply(ADDED, bound(make_pod("holder", GI, uid="holder", classes={"memory-qos": "gold"}), "g"))
    pod = make_pod("urgent", GI, classes={"memory-qos": "gold"})
    assert state.preempt(pod, {"g": (["holder"], 0)}) == {"g": (["holder"], 0)}
    assert state.preempt(pod, {"g": ([], 0)}) == {}  # without evicting the holder the slot stays taken


def test_unknown_victims_free_nothing_and_unknown_nodes_are_dropped() -> None:
    state, pods = world()
    pods.apply(ADDED, bound(make_pod("full", 9 * GI, uid="full"), "a"))
    assert state.preempt(make_pod("urgent", 2 * GI), {"a": (["not-ours"], 0), "zz": (["full"], 0)}) == {}


def test_the_preempt_route_speaks_the_wire_meta_form() -> None:
    state, pods = world()
    pods.apply(ADDED, bound(make_pod("big", 9 * GI, uid="big"), "a"))
    router = Router(extender_routes(state, MemoryAPI(pods), lambda: True))
    body = orjson.dumps({"Pod": make_pod("urgent", 3 * GI),
                         "NodeNameToVictims": {"a": {"Pods": [{"metadata": {"uid": "big"}}], "NumPDBViolations": 0}},
                         "NodeNameToMetaVictims": {"b": {"Pods": [], "NumPDBViolations": 0}}})
    response = asyncio.run(router.call(Request("POST", "/preempt", body, {"content-type": "application/json"})))
    assert response.status == 200
    assert orjson.loads(response.body) == {"NodeNameToMetaVictims": {
        "a": {"Pods": [{"UID": "big"}], "NumPDBViolations": 0}, "b": {"Pods": [], "NumPDBViolations": 0}}}
    bad = asyncio.run(router.call(Request("POST", "/preempt", b'{"Pod": {}, "NodeNameToMetaVictims": 5}',
                                          {"content-type": "application/json"})))
    assert bad.status == 400 and "NodeNameToMetaVictims" in orjson.loads(bad.body)["Error"]
