"""Allowances: capacity a replica holds in the shared ledger and spends without a write (webhook/quota/allowance.py).

The property that matters is exactness across replicas: whatever the interleaving of admissions, watch
deliveries, deletions, failed creations, upkeep and time, the pods that exist or may still appear never
exceed the quota. A hypothesis state machine drives three replicas over one shared book to check it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from qosgate.core.qosresources import ClassAssignments
from qosgate.core.quota import (
    UNLIMITED,
    Usage,
    allowance_limits,
    amount_of,
    covers,
    limited_part,
    load_quota_yaml,
    prefetch,
)
from qosgate.kube.store import PodStore
from qosgate.webhook.quota.books import ALLOWANCE_PREFIX, AllowanceEntry, LocalBook
from qosgate.webhook.quota.engine import QuotaEngine
from qosgate.webhook.quota.source import StaticQuotas
from tests.kube.podfactory import make_pod

GOLD = ClassAssignments(pod_level=(("memory-qos", "gold"),))
SILVER = ClassAssignments(pod_level=(("memory-qos", "silver"),))
KEY = ("memory-qos", "gold")
GI = 2**30


def quota(capacity: int, enforcement: str = "deny") -> Any:
    return load_quota_yaml(f"enforcement: {enforcement}\npod: [{{name: memory-qos, classes: "
                           f"[{{name: gold, capacity: {capacity}}}, {{name: silver}}]}}]", "q")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingBook(LocalBook):
    """The ledger ConfigMap's stand-in shared by replicas; counts writes."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def update(self, mutate: Callable[[dict[str, str]], Any]) -> Any:
        with self._lock:
            data = dict(self._data)
            result = mutate(data)
            if data != self._data:
                self.writes += 1
            self._data = data
            return result


def synced() -> PodStore:
    store = PodStore()
    store.replace([], "1")
    return store


def replicas(count: int, capacity: int, clock: Clock, book: CountingBook | None = None,
             **kwargs: Any) -> tuple[list[QuotaEngine], list[PodStore], CountingBook]:
    shared = book or CountingBook()
    stores = [synced() for _ in range(count)]
    quotas = StaticQuotas({"team-a": [quota(capacity)]})
    engines = [QuotaEngine(store, quotas, lambda ns: shared, clock=clock, replica=f"r{i}", **kwargs)
               for i, store in enumerate(stores)]
    return engines, stores, shared


def admit(engine: QuotaEngine, uid: str, request: ClassAssignments = GOLD, dry_run: bool = False) -> Any:
    return engine.admit("team-a", uid, f"pod-{uid}", request, GI, dry_run)


# --- the pure parts ----------------------------------------------------------------------------------------

def test_limits_take_the_tightest_deny_quota_and_leave_the_rest_unlimited() -> None:
    limits = allowance_limits([quota(10), quota(4)])
    assert limits == {KEY: Usage(4, UNLIMITED, UNLIMITED)}


def test_a_limiting_warn_quota_keeps_per_pod_reservations() -> None:
    assert allowance_limits([quota(10), quota(4, "warn")]) is None


def test_only_limited_dimensions_need_capacity() -> None:
    limits = {KEY: Usage(4, UNLIMITED, UNLIMITED)}
    assert limited_part(amount_of(GOLD, GI), limits) == {KEY: Usage(1, 0, 0)}
    assert limited_part(amount_of(SILVER, GI), limits) == {}


def test_covers_needs_every_asked_dimension() -> None:
    assert covers({KEY: Usage(2, 0, 0)}, {KEY: Usage(2, 0, 0)})
    assert not covers({KEY: Usage(1, 0, 0)}, {KEY: Usage(2, 0, 0)})
    assert not covers({}, {KEY: Usage(1, 0, 0)})


def test_prefetch_only_where_room_is_ample_and_never_more_than_a_fair_share() -> None:
    unit = {KEY: Usage(1, 0, 0)}
    assert prefetch({KEY: Usage(47, UNLIMITED, UNLIMITED)}, unit, 100, 3) == {}  # < 16 pods per holder
    assert prefetch({KEY: Usage(48, UNLIMITED, UNLIMITED)}, unit, 100, 3) == {KEY: Usage(8, 0, 0)}  # 48 // 6
    assert prefetch({KEY: Usage(10_000, UNLIMITED, UNLIMITED)}, unit, 100, 3) == {KEY: Usage(100, 0, 0)}


def test_allowance_entry_round_trips_and_refuses_garbage() -> None:
    entry = AllowanceEntry({KEY: Usage(3, 0, GI)}, 123.5, {"u1": ({KEY: Usage(1, 0, GI)}, 150.0)})
    assert AllowanceEntry.decode(entry.encode()) == entry
    for garbage in ("", "{}", '{"a": [["r","c",-1,0,0]], "e": 1}', '{"a": [], "e": 1, "l": [["u", 3, 1]]}', "[]"):
        assert AllowanceEntry.decode(garbage) is None


# --- the engine ----------------------------------------------------------------------------------------------

def test_after_one_write_a_busy_replica_admits_without_writing() -> None:
    clock = Clock()
    (engine,), _, book = replicas(1, 10_000, clock)
    for i in range(50):
        assert admit(engine, f"u{i}").allowed
    assert engine.stats.held_admissions >= 40
    assert book.writes <= 10
    (entry,) = engine.held_allowances("team-a").values()
    assert entry.amounts[KEY].pods >= 1


def test_unlimited_classes_never_touch_the_ledger() -> None:
    clock = Clock()
    (engine,), _, book = replicas(1, 10, clock)
    for i in range(20):
        assert admit(engine, f"s{i}", SILVER).allowed
    assert book.writes == 0


def test_near_capacity_every_pod_is_granted_exactly() -> None:
    clock = Clock()
    engines, _, _ = replicas(3, 10, clock)
    outcomes = [admit(engines[i % 3], f"u{i}") for i in range(30)]
    assert sum(o.allowed for o in outcomes) == 10
    assert sum(e.amounts[KEY].pods for e in engines[0].held_allowances("team-a").values()) == 10


def test_a_pod_another_replica_already_sees_is_counted_once() -> None:
    clock = Clock()
    (a, b), (_store_a, store_b), _ = replicas(2, 3, clock)
    for i in range(3):
        assert admit(a, f"u{i}").allowed
        store_b.apply("ADDED", make_pod(f"pod-u{i}", "team-a", uid=f"u{i}", memory_min=GI))
    store_b.apply("DELETED", make_pod("pod-u0", "team-a", uid="u0"))
    assert admit(b, "x").allowed  # b sees two pods, and a's entry lists them: one unit is free
    assert not admit(b, "y").allowed


def test_released_slots_are_handed_back_not_reused() -> None:
    clock = Clock()
    (a, b), (store_a, store_b), _book = replicas(2, 2, clock, observed_grace=5)
    assert admit(a, "u0").allowed and admit(a, "u1").allowed
    for store in (store_a, store_b):
        for uid in ("u0", "u1"):
            store.apply("ADDED", make_pod(f"pod-{uid}", "team-a", uid=uid, memory_min=GI))
    clock.now += 6
    a.maintain()  # releases both and hands their slots back: the pods are counted through the caches now
    assert a.held_allowances("team-a") == {}
    assert not admit(a, "u2").allowed and not admit(b, "u3").allowed  # two pods exist: still full


def test_a_released_slot_is_never_spent_again_even_before_it_is_handed_back() -> None:
    clock = Clock()
    (a, b), stores, _ = replicas(2, 3, clock, observed_grace=5)
    for i in range(3):
        assert admit(a, f"u{i}").allowed
        for store in stores:
            store.apply("ADDED", make_pod(f"pod-u{i}", "team-a", uid=f"u{i}", memory_min=GI))
    clock.now += 6  # every cache counts the three pods now: their slots are released, not freed
    assert not admit(a, "u3").allowed
    assert not admit(b, "u4").allowed


def test_idle_spare_is_handed_back() -> None:
    clock = Clock()
    (a, _b), _, _ = replicas(2, 10_000, clock, idle_return=2)
    for i in range(5):
        assert admit(a, f"u{i}").allowed
    held = a.held_allowances("team-a")[ALLOWANCE_PREFIX + "r0"].amounts[KEY].pods
    assert held > 5  # capacity held ahead
    clock.now += 3
    a.maintain()
    assert a.held_allowances("team-a")[ALLOWANCE_PREFIX + "r0"].amounts[KEY].pods == 5


def test_a_lowered_quota_stops_spending_what_was_held_under_the_old_one() -> None:
    clock = Clock()
    store = synced()
    book = CountingBook()
    quotas = StaticQuotas({"team-a": [quota(10_000)]})
    engine = QuotaEngine(store, quotas, lambda ns: book, clock=clock, replica="r0")
    for i in range(3):
        assert admit(engine, f"u{i}").allowed
    quotas._quotas["team-a"] = [quota(3)]
    assert not admit(engine, "late").allowed


def test_held_capacity_is_not_spent_close_to_its_expiry() -> None:
    clock = Clock()
    (engine,), _, book = replicas(1, 10_000, clock, ttl=30)
    assert admit(engine, "u0").allowed
    writes = book.writes
    clock.now += 21  # past expiry − ttl/3: the next admission writes (and renews) instead of spending
    assert admit(engine, "u1").allowed
    assert book.writes == writes + 1


def test_a_dead_replicas_allowance_frees_its_capacity_after_the_ttl() -> None:
    clock = Clock()
    (a, b), _, _ = replicas(2, 50, clock, ttl=30)
    for i in range(50):
        admit(a, f"u{i}")  # none of these pods ever appears; then replica a dies
    assert not admit(b, "x").allowed
    clock.now += 31
    assert admit(b, "x").allowed


def test_shutdown_hands_back_the_spare() -> None:
    clock = Clock()
    (a, _b), _, _ = replicas(2, 10_000, clock)
    for i in range(3):
        assert admit(a, f"u{i}").allowed
    a.stop()
    assert a.held_allowances("team-a")[ALLOWANCE_PREFIX + "r0"].amounts[KEY].pods == 3


def test_retry_of_an_admitted_pod_is_charged_once() -> None:
    clock = Clock()
    (engine,), _, _ = replicas(1, 2, clock)
    assert admit(engine, "u0").allowed and admit(engine, "u0").allowed
    assert admit(engine, "u1").allowed
    assert not admit(engine, "u2").allowed


# --- exactness under any interleaving ----------------------------------------------------------------------

class Replicas(RuleBasedStateMachine):
    """Three replicas, one book. A pod admitted is either created (delivered to every cache within the
    grace, the deployment's assumption) or fails after admission; pods get deleted; time passes."""

    GRACE = 5.0
    TTL = 30.0

    @initialize(capacity=st.sampled_from([3, 10, 300]))
    def setup(self, capacity: int) -> None:
        self.capacity = capacity
        self.clock = Clock()
        self.engines, self.stores, _ = replicas(3, capacity, self.clock, ttl=self.TTL, observed_grace=self.GRACE,
                                                idle_return=2.0)
        self.count = 0
        self.pending: dict[str, tuple[float, set[int]]] = {}  # admitted, not yet in every cache
        self.doomed: dict[str, float] = {}  # admitted, will never appear (failed after admission)
        self.live: set[str] = set()

    @rule(replica=st.integers(0, 2), dry_run=st.booleans(), fails=st.booleans())
    def admit(self, replica: int, dry_run: bool, fails: bool) -> None:
        self.count += 1
        uid = f"u{self.count}"
        if admit(self.engines[replica], uid, dry_run=dry_run).allowed and not dry_run:
            if fails:
                self.doomed[uid] = self.clock.now
            else:
                self.pending[uid] = (self.clock.now, set())

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        uid = data.draw(st.sampled_from(sorted(self.pending)))
        replica = data.draw(st.integers(0, 2))
        self._deliver(uid, replica)

    def _deliver(self, uid: str, replica: int) -> None:
        _admitted, seen = self.pending[uid]
        self.stores[replica].apply("ADDED", make_pod(f"pod-{uid}", "team-a", uid=uid, memory_min=GI))
        seen.add(replica)
        self.live.add(uid)
        if len(seen) == 3:
            del self.pending[uid]

    @precondition(lambda self: bool(self.live - set(self.pending)))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        uid = data.draw(st.sampled_from(sorted(self.live - set(self.pending))))
        for store in self.stores:
            store.apply("DELETED", make_pod(f"pod-{uid}", "team-a", uid=uid))
        self.live.discard(uid)

    @rule(replica=st.integers(0, 2))
    def maintain(self, replica: int) -> None:
        self.engines[replica].maintain()

    @rule(seconds=st.sampled_from([0.1, 1.0, 3.0, 6.0, 31.0]))
    def wait(self, seconds: float) -> None:
        # The assumption the design rests on: every cache shows a created pod within the grace.
        for uid, (admitted, seen) in list(self.pending.items()):
            if self.clock.now + seconds - admitted >= self.GRACE:
                for replica in {0, 1, 2} - seen:
                    self._deliver(uid, replica)
        self.clock.now += seconds
        self.doomed = {uid: t for uid, t in self.doomed.items() if self.clock.now - t < self.TTL}

    @invariant()
    def never_over_quota(self) -> None:
        # Pods that exist, plus admitted ones still on their way: what the namespace really uses.
        assert len(self.live | set(self.pending)) <= self.capacity


TestReplicasStayExact = Replicas.TestCase
TestReplicasStayExact.settings = settings(max_examples=600, stateful_step_count=60, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
