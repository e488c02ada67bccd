from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.core.records import NodeRecord, PodRecord
from qosgate.kube.store import ClassUsage, NodeStore, ObjectStore, PodStore
from tests.kube.podfactory import make_node, make_pod

NODES = ("", "n1", "n2")
NAMESPACES = ("a", "b")


def pod_for(i: int, node: str, phase: str, memory: int, pod_class: str | None, container_class: str | None,
            terminating: bool) -> dict[str, Any]:
    # Name and namespace follow the uid, as on a real server where a live name belongs to one pod.
    return make_pod(f"p-{i}", NAMESPACES[i % 2], uid=f"uid-{i}", node=node, phase=phase, memory_min=memory,
                    pod_class=pod_class, container_class=container_class, terminating=terminating)


pods = st.builds(
    pod_for,
    st.integers(0, 5),
    st.sampled_from(NODES),
    st.sampled_from(["Pending", "Running", "Succeeded", "Failed"]),
    st.sampled_from([0, 100, 2**30]),
    st.sampled_from([None, "gold", "silver"]),
    st.sampled_from([None, "gold", "bronze"]),
    st.booleans(),
)
events = st.one_of(
    st.tuples(st.just("apply"), st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), pods),
    st.tuples(st.just("replace"), st.just(""), st.lists(pods, max_size=6)),
)


def recompute(records: list[PodRecord]) -> tuple[dict[str, int], dict[str, Counter[tuple[str, str]]],
                                                  dict[str, dict[tuple[str, str], ClassUsage]]]:
    memory: dict[str, int] = {}
    classes: dict[str, Counter[tuple[str, str]]] = {}
    usage: dict[str, dict[tuple[str, str], list[int]]] = {}
    for r in records:
        if not r.active:
            continue
        if r.node_name:
            memory[r.node_name] = memory.get(r.node_name, 0) + r.memory_min
            classes.setdefault(r.node_name, Counter()).update(r.classes)
        ns = usage.setdefault(r.namespace, {})
        for key in r.pod_classes:
            ns.setdefault(key, [0, 0, 0])[0] += 1
        for key in r.container_classes:
            ns.setdefault(key, [0, 0, 0])[1] += 1
        for key in r.classes:
            ns.setdefault(key, [0, 0, 0])[2] += r.memory_min
    return memory, classes, {ns: {k: ClassUsage(*v) for k, v in u.items()} for ns, u in usage.items()}


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=25))
def test_aggregates_match_recomputation_after_any_events(sequence: list[tuple[str, str, Any]]) -> None:
    store = PodStore()
    mirror: dict[str, PodRecord] = {}

    def listen(old: PodRecord | None, new: PodRecord | None) -> None:
        # Listeners must see a consistent story: `old` is what they were last told about this pod.
        uid = (old or new).uid  # type: ignore[union-attr]
        assert mirror.get(uid) == old
        assert old != new
        if new is None:
            del mirror[uid]
        else:
            mirror[uid] = new

    store.subscribe(listen)
    for rv, (kind, event_type, payload) in enumerate(sequence, 1):
        if kind == "apply":
            payload["metadata"]["resourceVersion"] = str(rv)
            store.apply(event_type, payload)
        else:
            store.replace(payload, str(rv))
        assert store.resource_version == str(rv)

    records = store.records()
    assert {r.uid: r for r in records} == mirror
    assert len(store) == len(records)
    memory, classes, usage = recompute(records)
    for node in NODES[1:]:
        assert store.node_memory_min(node) == memory.get(node, 0)
        assert store.node_class_count(node) == dict(classes.get(node, {}))
        assert sorted(r.uid for r in store.on_node(node)) == sorted(r.uid for r in records if r.node_name == node)
    for ns in NAMESPACES:
        assert store.namespace_usage(ns) == usage.get(ns, {})
        assert sorted(r.uid for r in store.in_namespace(ns)) == sorted(r.uid for r in records if r.namespace == ns)
    for r in records:
        assert store.get(r.uid) is r
        assert store.get_by_name(r.namespace, r.name) is r
    # Nothing lingers once every pod is gone.
    store.replace([], "final")
    assert store._ns_usage == {}
    assert store._by_name == {} and store._by_node == {} and mirror == {}


def test_replace_notifies_only_real_changes() -> None:
    store = PodStore()
    seen: list[tuple[PodRecord | None, PodRecord | None]] = []
    a, b = make_pod("a", uid="1", node="n1"), make_pod("b", uid="2", node="n1")
    store.replace([a, b], "5")
    assert store.synced and store.resource_version == "5"
    store.subscribe(lambda old, new: seen.append((old, new)))
    kept = store.get("1")
    changed = make_pod("b", uid="2", node="n1", phase="Succeeded")
    store.replace([a, changed, make_pod("c", uid="3")], "9")
    assert store.get("1") is kept  # unchanged records keep their identity across relists
    assert [(o and o.uid, n and n.uid) for o, n in seen] == [("2", "2"), (None, "3")]
    seen.clear()
    store.apply("MODIFIED", a)  # identical content: nothing to tell
    assert seen == []


def test_replace_that_fails_half_way_changes_nothing() -> None:
    store = PodStore()
    store.replace([make_pod("a", uid="1")], "1")

    def broken_pages():
        yield make_pod("b", uid="2")
        raise ConnectionError("list interrupted")

    with pytest.raises(ConnectionError):
        store.replace(broken_pages(), "2")
    assert [r.uid for r in store.records()] == ["1"] and store.resource_version == "1"


def test_delete_of_unknown_and_bad_event_type() -> None:
    store = PodStore()
    store.apply("DELETED", make_pod("ghost", uid="g"))
    assert len(store) == 0
    with pytest.raises(ValueError):
        store.apply("BOOKMARK", make_pod("x", uid="x"))
    with pytest.raises(ValueError):
        PodStore("guess")  # type: ignore[arg-type]


def test_listener_may_read_the_store_and_failures_are_contained() -> None:
    store = PodStore()
    observed: list[int] = []

    def reads(old: PodRecord | None, new: PodRecord | None) -> None:
        observed.append(store.node_memory_min("n1"))

    def explodes(old: PodRecord | None, new: PodRecord | None) -> None:
        raise RuntimeError("listener bug")

    store.subscribe(explodes)
    store.subscribe(reads)
    store.apply("ADDED", make_pod("a", uid="1", node="n1", memory_min=10))
    store.apply("ADDED", make_pod("b", uid="2", node="n1", memory_min=5))
    assert observed == [10, 15]
    store.unsubscribe(reads)
    store.apply("DELETED", make_pod("b", uid="2"))
    assert observed == [10, 15]


def test_bookmark_moves_resource_version() -> None:
    store = NodeStore()
    store.resource_version = "42"
    assert store.resource_version == "42"


def test_node_store() -> None:
    store = NodeStore()
    seen: list[tuple[NodeRecord | None, NodeRecord | None]] = []
    store.subscribe(lambda old, new: seen.append((old, new)))
    store.replace([make_node("n1"), make_node("n2")], "3")
    assert sorted(store.names()) == ["n1", "n2"] and len(store) == 2
    store.apply("MODIFIED", make_node("n1", "32Gi"))
    store.apply("DELETED", make_node("n2"))
    assert store.get("n1").allocatable_memory == 32 * 2**30  # type: ignore[union-attr]
    assert store.get("n2") is None
    assert len(seen) == 4


def test_object_store_keeps_a_slim_copy() -> None:
    store = ObjectStore()
    cm = {"metadata": {"name": "quota", "namespace": "team", "resourceVersion": "7",
                       "labels": {"qosgate.io/quota": "true"}, "managedFields": [{"big": "x" * 1000}]},
          "data": {"pod": "[]"}}
    store.replace([cm], "7")
    kept = store.get("team", "quota")
    assert kept is not None and kept["data"] == {"pod": "[]"} and "managedFields" not in kept["metadata"]
    assert store.in_namespace("team") == [kept] and store.in_namespace("te") == []


def test_concurrent_readers_and_writer() -> None:
    store = PodStore()
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                # Readers never see a half-applied update (negative sums, dicts changing under iteration).
                total = store.node_memory_min("n1")
                assert total >= 0
                store.namespace_usage("a")
                store.on_node("n1")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(2000):
        store.apply("ADDED", pod_for(i % 50, "n1", "Running", 1, "gold", None, False))
        if i % 3 == 0:
            store.apply("DELETED", pod_for((i * 7) % 50, "n1", "Running", 1, "gold", None, False))
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert store.node_memory_min("n1") == len(store.on_node("n1"))
