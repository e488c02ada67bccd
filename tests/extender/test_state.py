"""ExtenderState: filter/prioritize/bind decisions, reservations, the watch, expiry and concurrency."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qosgate.core.nodefit import Fit, check_fit, protectable, score
from qosgate.extender.state import BindOutcome, BindResult, ExtenderSettings, ExtenderState
from qosgate.kube.store import ADDED, DELETED, MODIFIED, NodeStore, PodStore
from tests.extender.memapi import MemoryAPI, overcommitted
from tests.extender.objects import GI, bound, make_node, make_pod


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pods() -> PodStore:
    store = PodStore("annotated")
    store.replace([], "1")
    return store


@pytest.fixture
def nodes() -> NodeStore:
    store = NodeStore()
    store.replace([make_node("a", protectable="10Gi"), make_node("b", protectable="10Gi"),
                   make_node("gold", protectable="10Gi", classes="memory-qos=gold:2,silver")], "1")
    return store


@pytest.fixture
def state(pods: PodStore, nodes: NodeStore, clock: Clock) -> Iterator[ExtenderState]:
    st = ExtenderState(pods, nodes, ExtenderSettings(reservation_ttl=60), clock=clock)
    yield st
    st.close()


@pytest.fixture
def api(pods: PodStore) -> MemoryAPI:
    return MemoryAPI(pods)


def pending(api: MemoryAPI, name: str, memory_min: int | None, **kwargs: object) -> dict:
    pod = make_pod(name, memory_min, **kwargs)  # type: ignore[arg-type]
    api.create(pod)
    api.deliver()
    return pod


def bind(state: ExtenderState, api: MemoryAPI, pod: dict, node: str) -> str:
    meta = pod["metadata"]
    return state.bind(meta["namespace"], meta["name"], meta["uid"], node, api)


# --- filter -------------------------------------------------------------------------------------------

def test_filter_splits_fit_now_and_never(state: ExtenderState, pods: PodStore) -> None:
    pods.apply(ADDED, bound(make_pod("old", 8 * GI), "a"))
    result = state.filter(make_pod("p", 4 * GI), ["a", "b"])
    assert result.passed == ["b"]
    assert result.failed == {"a": "memory.min 4Gi exceeds the free protectable memory"}
    assert result.unresolvable == {}

    huge = state.filter(make_pod("huge", 11 * GI), ["a", "b"])
    assert huge.passed == [] and set(huge.unresolvable) == {"a", "b"}
    assert huge.unresolvable["b"] == "memory.min 11Gi exceeds the node's whole protectable memory"


def test_trivial_pod_passes_every_node_even_unknown(state: ExtenderState) -> None:
    assert state.filter(make_pod("p"), ["a", "nope", "b"]).passed == ["a", "nope", "b"]
    assert state.prioritize(make_pod("p"), ["a", "b"]) == [("a", 0), ("b", 0)]


def test_unknown_node_fails_resolvably(state: ExtenderState) -> None:
    result = state.filter(make_pod("p", GI), ["nope"])
    assert result.failed == {"nope": "node is not in qosgate's node cache yet"}


def test_node_sent_in_full_is_judged_from_the_request(state: ExtenderState) -> None:
    fresh = make_node("fresh", protectable="2Gi")
    result = state.filter(make_pod("p", GI), ["fresh"], [fresh])
    assert result.passed == ["fresh"]
    assert state.filter(make_pod("q", 3 * GI), ["fresh"], [fresh]).unresolvable


def test_classes_offered_and_capacity(state: ExtenderState, pods: PodStore) -> None:
    gold = {"memory-qos": "gold"}
    result = state.filter(make_pod("p", GI, classes=gold), ["a", "gold"])
    assert result.passed == ["a", "gold"]  # "a" has no class annotation: offers everything
    bronze = state.filter(make_pod("p", GI, classes={"memory-qos": "bronze"}), ["gold"])
    assert "does not offer memory-qos class bronze" in bronze.unresolvable["gold"]
    for i in range(2):
        pods.apply(ADDED, bound(make_pod(f"g{i}", 0, classes=gold), "gold"))
    full = state.filter(make_pod("p", 0, classes=gold), ["gold"])
    assert full.failed == {"gold": "memory-qos class gold is full"}


def test_unreadable_pod_annotation_fails_everywhere_with_the_reason(state: ExtenderState) -> None:
    pod = make_pod("p")
    pod["metadata"]["annotations"]["qosgate.io/memory-min"] = "lots"
    result = state.filter(pod, ["a", "b"])
    assert result.passed == [] and "lots" in result.unresolvable["a"]


def test_unreadable_node_annotation_fails_closed(state: ExtenderState, nodes: NodeStore) -> None:
    nodes.apply(ADDED, make_node("broken", protectable="plenty"))
    result = state.filter(make_pod("p", GI), ["broken"])
    assert "plenty" in result.failed["broken"]
    assert state.filter(make_pod("q"), ["broken"]).passed == ["broken"]


def test_prioritize_spread_and_binpack(pods: PodStore, nodes: NodeStore) -> None:
    pods.apply(ADDED, bound(make_pod("old", 6 * GI), "a"))
    spread = ExtenderState(pods, nodes, ExtenderSettings(strategy="spread"))
    assert spread.prioritize(make_pod("p", 2 * GI), ["a", "b", "nope"]) == [("a", 2), ("b", 8), ("nope", 0)]
    binpack = ExtenderState(pods, nodes, ExtenderSettings(strategy="binpack"))
    assert binpack.prioritize(make_pod("p", 2 * GI), ["a", "b"]) == [("a", 8), ("b", 2)]
    # A node the pod does not fit scores 0 whatever the strategy.
    assert binpack.prioritize(make_pod("p", 5 * GI), ["a"]) == [("a", 0)]


# --- bind, reservations, the watch ----------------------------------------------------------------------

def test_reservation_counts_until_the_watch_shows_the_pod_then_never_twice(
        state: ExtenderState, api: MemoryAPI) -> None:
    pod = pending(api, "p", 6 * GI)
    assert bind(state, api, pod, "a") == ""
    assert state.node_usage("a") == (0, 6 * GI)  # the watch has not shown the binding yet
    assert state.filter(make_pod("q", 5 * GI), ["a"]).failed  # the reservation is counted
    api.deliver()
    assert state.node_usage("a") == (6 * GI, 0)  # moved from reserved to bound: counted exactly once
    assert state.reservations() == []
    assert state.filter(make_pod("r", 4 * GI), ["a"]).passed == ["a"]


def test_bind_rechecks_under_the_lock(state: ExtenderState, api: MemoryAPI) -> None:
    first, second = pending(api, "p1", 6 * GI), pending(api, "p2", 6 * GI)
    # Both pass filter (the scheduler filters the second before the first is bound) …
    assert state.filter(first, ["a"]).passed == ["a"]
    assert state.filter(second, ["a"]).passed == ["a"]
    # … but only one bind can reserve the room.
    assert bind(state, api, first, "a") == ""
    message = bind(state, api, second, "a")
    assert message.startswith("node a no longer fits pod default/p2: "
                              "memory.min 6Gi exceeds the free protectable memory (")  # this node's figures follow
    assert api.pods[second["metadata"]["uid"]]["spec"].get("nodeName") is None


def test_definite_failure_rolls_back(state: ExtenderState, api: MemoryAPI) -> None:
    pod = pending(api, "p", 6 * GI)
    api.fail_rate = 1.0
    assert bind(state, api, pod, "a") == "injected failure"
    assert state.reservations() == [] and state.node_usage("a") == (0, 0)


def test_pod_gone_rolls_back(state: ExtenderState, api: MemoryAPI) -> None:
    pod = pending(api, "p", 6 * GI)
    api.pods.clear()  # deleted in the API, our watch has not heard yet
    assert "not found" in bind(state, api, pod, "a")
    assert state.reservations() == []


def test_ambiguous_failure_keeps_the_reservation_until_ttl(
        state: ExtenderState, api: MemoryAPI, clock: Clock) -> None:
    pod = pending(api, "p", 6 * GI)
    api.unknown_rate = 1.0
    assert "injected timeout" in bind(state, api, pod, "a")
    assert state.node_usage("a") == (0, 6 * GI)  # it may have landed: keep counting
    clock.now += 59
    assert state.expire_reservations() == 0
    clock.now += 2
    assert state.expire_reservations() == 1
    assert state.node_usage("a") == (0, 0)


def test_ttl_does_not_expire_a_bind_in_flight(state: ExtenderState, api: MemoryAPI, clock: Clock) -> None:
    pod = pending(api, "p", 6 * GI)
    entered, release = threading.Event(), threading.Event()

    def slow() -> None:
        entered.set()
        release.wait()

    api.before_bind = slow
    worker = threading.Thread(target=bind, args=(state, api, pod, "a"))
    worker.start()
    entered.wait()
    clock.now += 3600
    assert state.expire_reservations() == 0
    assert state.node_usage("a") == (0, 6 * GI)
    release.set()
    worker.join()


def test_already_bound_here_is_success(state: ExtenderState, api: MemoryAPI) -> None:
    pod = pending(api, "p", 6 * GI)
    assert bind(state, api, pod, "a") == ""
    # The scheduler timed out and retries before the watch delivered the binding: 409 → success, counted once.
    assert bind(state, api, pod, "a") == ""
    assert state.node_usage("a") == (0, 6 * GI)
    api.deliver()
    # Retry after the watch: the store already shows it bound here, no API call at all.
    calls = api.bind_calls
    assert bind(state, api, pod, "a") == ""
    assert api.bind_calls == calls
    assert "already bound to node a" in bind(state, api, pod, "b")


def test_bound_elsewhere_rolls_back_this_node(state: ExtenderState, api: MemoryAPI) -> None:
    pod = pending(api, "p", 2 * GI)
    assert bind(state, api, pod, "a") == ""
    assert "already bound to a" in bind(state, api, pod, "b")
    assert state.node_usage("b") == (0, 0)
    assert state.node_usage("a") == (0, 2 * GI)


def test_deleted_pod_releases_its_reservation(state: ExtenderState, api: MemoryAPI) -> None:
    pod = pending(api, "p", 6 * GI)
    api.unknown_rate = 1.0
    bind(state, api, pod, "a")
    api.events.clear()  # the binding never shows: the pod is deleted instead
    api.delete(pod["metadata"]["uid"])
    api.deliver()
    assert state.reservations() == [] and state.node_usage("a") == (0, 0)


def test_terminal_pod_releases_its_reservation(state: ExtenderState, api: MemoryAPI, pods: PodStore) -> None:
    pod = pending(api, "p", 6 * GI)
    api.unknown_rate = 1.0
    bind(state, api, pod, "a")
    pods.apply(MODIFIED, {**pod, "status": {"phase": "Failed"}})
    assert state.node_usage("a") == (0, 0)


def test_pod_filtered_but_not_yet_watched_can_bind(state: ExtenderState, api: MemoryAPI) -> None:
    pod = make_pod("p", 2 * GI)
    api.create(pod)  # the scheduler sees it; our watch has not delivered it
    assert state.filter(pod, ["a"]).passed == ["a"]
    assert bind(state, api, pod, "a") == ""
    assert state.node_usage("a") == (0, 2 * GI)


def test_bind_of_an_unknown_pod_is_an_error(state: ExtenderState, api: MemoryAPI) -> None:
    message = state.bind("default", "ghost", "uid-ghost", "a", api)
    assert "not in qosgate's pod cache yet" in message and api.bind_calls == 0


def test_trivial_pod_binds_without_reserving(state: ExtenderState, api: MemoryAPI) -> None:
    pod = pending(api, "p", None)
    assert bind(state, api, pod, "a") == ""
    assert state.reservations() == [] and api.bind_calls == 1


def test_a_pod_does_not_compete_with_its_own_reservation(state: ExtenderState, api: MemoryAPI) -> None:
    pod = pending(api, "p", 6 * GI)
    api.unknown_rate = 1.0
    bind(state, api, pod, "a")  # ambiguous: the reservation on a stays
    api.events.clear()
    # The scheduler retries the same pod: its old reservation must not push it off "a".
    assert state.filter(pod, ["a"]).passed == ["a"]


def test_class_slots_are_reserved(state: ExtenderState, api: MemoryAPI) -> None:
    gold = {"memory-qos": "gold"}
    first, second, third = (pending(api, f"g{i}", 0, classes=gold) for i in range(3))
    assert bind(state, api, first, "gold") == ""
    assert bind(state, api, second, "gold") == ""
    assert "gold is full" in bind(state, api, third, "gold")
    api.deliver()
    assert "gold is full" in state.filter(third, ["gold"]).failed["gold"]


def test_settings_are_validated_and_any_store_accounting_serves() -> None:
    # Records carry qosgate's figure, the requests and the QoS class, so the extender counts the same whatever
    # the store's accounting (a live catalog change switches accounting without rebuilding the caches).
    ExtenderState(PodStore("kubelet"), NodeStore(), ExtenderSettings(accounting="annotated"))
    with pytest.raises(ValueError, match="kubelet_policy"):
        ExtenderSettings(kubelet_policy="sometimes")
    with pytest.raises(ValueError):
        ExtenderSettings(protectable_percent=101)
    with pytest.raises(ValueError):
        ExtenderSettings(strategy="random")  # type: ignore[arg-type]


def test_kubelet_accounting_counts_requests(nodes: NodeStore) -> None:
    store = PodStore("kubelet")
    state = ExtenderState(store, nodes, ExtenderSettings(accounting="kubelet"))
    store.apply(ADDED, bound(make_pod("old", request="7Gi"), "a"))
    result = state.filter(make_pod("p", request="4Gi"), ["a", "b"])
    assert result.passed == ["b"] and state.explain_fit(make_pod("p", request="4Gi"), "a").detail == "3Gi of 10Gi free"


# --- concurrency ------------------------------------------------------------------------------------

def test_concurrent_filters_and_binds_never_overcommit(pods: PodStore) -> None:
    """Many schedulers' worth of filter → bind, binds in parallel, a watch lagging behind, failures."""
    rng = random.Random(7)
    names = [f"n{i}" for i in range(6)]
    nodes = NodeStore()
    nodes.replace([make_node(n, protectable=f"{rng.randint(4, 12)}Gi") for n in names], "1")
    state = ExtenderState(pods, nodes, ExtenderSettings())
    api = MemoryAPI(pods, seed=3)
    api.fail_rate, api.unknown_rate = 0.1, 0.05
    records = {n: nodes.get(n) for n in names}
    violations: list[dict] = []
    stop = threading.Event()

    def check_after_bind() -> None:
        found = overcommitted(api, records, 90)  # type: ignore[arg-type]
        if found:
            violations.append(found)

    api.before_bind = check_after_bind

    def watch() -> None:
        while not stop.is_set():
            api.deliver(rng.randint(0, 3))

    def scheduler(worker: int) -> None:
        local = random.Random(worker)
        for i in range(120):
            pod = make_pod(f"w{worker}-{i}", local.randint(1, 3) * GI // 2)
            api.create(pod)
            result = state.filter(pod, names)
            if result.passed:
                bind(state, api, pod, local.choice(result.passed))

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=scheduler, args=(w,)) for w in range(8)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    watcher.join()
    api.deliver()
    check_after_bind()
    assert violations == []
    assert sum(api.bound_memory().values()) > 0
    # Once the watch caught up every reservation has turned into a bound pod the store counts, once.
    for name in names:
        assert state.node_usage(name) == (api.bound_memory().get(name, 0), 0)
    assert state.reservations() == []


def test_delete_event_for_unknown_pod_is_harmless(state: ExtenderState, pods: PodStore) -> None:
    pods.apply(DELETED, make_pod("never-seen", GI))
    assert state.reservations() == []


def test_bind_result_flags() -> None:
    assert BindResult(BindOutcome.ALREADY_BOUND_HERE).bound_here
    assert not BindResult(BindOutcome.UNKNOWN).bound_here


# --- the mirror of the stores ---------------------------------------------------------------------------

def test_state_built_on_warm_stores_counts_what_they_hold(pods: PodStore, nodes: NodeStore) -> None:
    pods.apply(ADDED, bound(make_pod("old", 7 * GI), "a"))
    late = ExtenderState(pods, nodes, ExtenderSettings())
    assert late.node_usage("a") == (7 * GI, 0)
    assert late.filter(make_pod("p", 4 * GI), ["a"]).failed
    assert late.disagreements() == {}
    late.close()


def test_node_updates_reach_the_decisions(state: ExtenderState, nodes: NodeStore) -> None:
    assert state.filter(make_pod("p", 8 * GI), ["a"]).passed == ["a"]
    nodes.apply(MODIFIED, make_node("a", protectable="4Gi"))
    assert state.filter(make_pod("p", 8 * GI), ["a"]).unresolvable
    nodes.apply(DELETED, make_node("a"))
    assert state.filter(make_pod("p", 8 * GI), ["a"]).failed == {"a": "node is not in qosgate's node cache yet"}


def test_ledger_agrees_with_the_store(state: ExtenderState, api: MemoryAPI, pods: PodStore) -> None:
    for i in range(20):
        pod = pending(api, f"p{i}", (i % 4) * GI // 2)
        bind(state, api, pod, "ab"[i % 2])
    api.deliver()
    pods.apply(MODIFIED, {**api.pods[next(iter(api.pods))], "status": {"phase": "Succeeded"}})
    assert state.disagreements() == {}
    assert state.reservations() == []


node_specs = st.lists(st.tuples(st.integers(0, 12), st.sampled_from([None, "memory-qos=gold:2,silver",
                                                                      "memory-qos=silver", "memory-qos=gold"])),
                      min_size=1, max_size=3)
pod_specs = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 2), st.sampled_from([None, "gold", "gold", "silver"]),
                               st.sampled_from(["bound", "reserved"])), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node_specs=node_specs, pod_specs=pod_specs, ask=st.integers(0, 6),
       ask_class=st.sampled_from([None, "gold", "silver"]))
def test_filter_agrees_with_check_fit(node_specs: list, pod_specs: list, ask: int, ask_class: str | None) -> None:
    """The filter's fast path and its reasons are the nodefit rule over bound + reserved usage."""
    pods, nodes = PodStore(), NodeStore()
    raw_nodes = [make_node(f"n{i}", protectable=f"{gib}Gi", classes=offer) for i, (gib, offer) in
                 enumerate(node_specs)]
    nodes.replace(raw_nodes, "1")
    pods.replace([], "1")
    state = ExtenderState(pods, nodes, ExtenderSettings())
    api = MemoryAPI(pods)
    usage: dict[str, int] = {}
    class_usage: dict[str, dict[tuple[str, str], int]] = {}
    for i, (gib, node_index, klass, how) in enumerate(pod_specs):
        name = f"n{node_index % len(node_specs)}"
        classes = {"memory-qos": klass} if klass else None
        pod = make_pod(f"q{i}", gib * GI, classes=classes)
        api.create(pod)
        api.deliver()
        if how == "bound":
            pods.apply(MODIFIED, bound(pod, name))
        elif bind(state, api, pod, name) != "":
            continue  # refused: it does not count
        if gib or klass:
            usage[name] = usage.get(name, 0) + gib * GI
            if klass:
                counts = class_usage.setdefault(name, {})
                counts[("memory-qos", klass)] = counts.get(("memory-qos", klass), 0) + 1
    asked = make_pod("asked", ask * GI, classes={"memory-qos": ask_class} if ask_class else None)
    result = state.filter(asked, [f"n{i}" for i in range(len(node_specs))])
    for name in (f"n{i}" for i in range(len(node_specs))):
        expected = check_fit(ask * GI, frozenset({("memory-qos", ask_class)}) if ask_class else frozenset(),
                             nodes.get(name), usage.get(name, 0), 0, class_usage.get(name, {}), 90)  # type: ignore[arg-type]
        if ask == 0 and not ask_class:
            expected = Fit(True)
        assert (name in result.passed) == expected.ok
        if not expected.ok:
            got = result.unresolvable.get(name) or result.failed.get(name)
            assert got == expected.reason and (name in result.unresolvable) == expected.unresolvable
    # prioritize: nodefit.score of what is left, 0 where the memory does not fit.
    scores = dict(state.prioritize(asked, [f"n{i}" for i in range(len(node_specs))]))
    for name in scores:
        budget = protectable(nodes.get(name), 90)  # type: ignore[arg-type]
        left = budget - usage.get(name, 0) - ask * GI
        want = score(left, budget, "spread") if (ask or ask_class) and budget > 0 and left >= 0 else 0
        assert scores[name] == want
    state.close()


def test_bind_refuses_a_uid_of_another_pod(state: ExtenderState, api: MemoryAPI) -> None:
    pod = pending(api, "p", GI)
    meta = pod["metadata"]
    assert "belongs to default/p" in state.bind("default", "q", meta["uid"], "a", api)
    unseen = make_pod("u", GI)
    state.filter(unseen, ["a"])  # remembered from the filter only
    assert "belongs to default/u" in state.bind("other", "u", unseen["metadata"]["uid"], "a", api)
    assert api.bind_calls == 0
