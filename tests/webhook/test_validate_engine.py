"""The quota engine: cache usage + reservations, group commit, TTL, dry-run, fail-closed (no HTTP, no API)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from qosgate.core.qosresources import ClassAssignments
from qosgate.core.quota import load_quota_yaml
from qosgate.kube.store import PodStore
from qosgate.webhook.quota.books import LocalBook, QuotaReservation, local_books
from qosgate.webhook.quota.engine import QuotaEngine
from qosgate.webhook.quota.source import StaticQuotas
from tests.kube.podfactory import make_pod
from tests.support.tls import eventually

GOLD = ClassAssignments(pod_level=(("memory-qos", "gold"),))
SILVER = ClassAssignments(pod_level=(("memory-qos", "silver"),))
QUOTA = load_quota_yaml("pod: [{name: memory-qos, classes: [{name: gold, capacity: 10}, {name: silver}]}]", "q")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class SharedBook(LocalBook):
    """Stands in for the ledger ConfigMap: one book several replicas (engines) read and write."""

    shared = True


def shared_books() -> Callable[[str], Any]:
    books: dict[str, SharedBook] = {}
    return lambda ns: books.setdefault(ns, SharedBook())


def synced_store() -> PodStore:
    store = PodStore()
    store.replace([], "1")
    return store


def engine(store: PodStore | None = None, clock: Clock | None = None, books: Callable[[str], Any] | None = None,
           quotas: dict[str, Any] | None = None, **kwargs: Any) -> QuotaEngine:
    # `is None`, not `or`: an empty PodStore is falsy (it has a length).
    return QuotaEngine(synced_store() if store is None else store, StaticQuotas(quotas or {"team-a": [QUOTA]}),
                       books, clock=clock or Clock(), **kwargs)


def admit(e: QuotaEngine, uid: str, request: ClassAssignments = GOLD, dry_run: bool = False, ns: str = "team-a"):
    return e.admit(ns, uid, f"pod-{uid}", request, 2**30, dry_run)


def test_concurrent_admissions_never_exceed_capacity() -> None:
    e = engine()
    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(lambda i: admit(e, f"u{i}"), range(200)))
    assert sum(o.allowed for o in outcomes) == 10
    denied = [o for o in outcomes if not o.allowed]
    assert {o.message for o in denied} == {"namespace team-a: memory-qos class gold at capacity 10/10"}
    assert {o.code for o in denied} == {403}
    assert len(e.reservations("team-a")) == 10


def test_observed_pods_are_counted_once_and_deletion_frees() -> None:
    store = synced_store()
    e = engine(store)
    for i in range(10):
        assert admit(e, f"u{i}").allowed
    for i in range(10):
        store.apply("ADDED", make_pod(f"pod-u{i}", "team-a", uid=f"u{i}", memory_min=2**30))
    assert store.namespace_usage("team-a")[("memory-qos", "gold")].pods == 10
    assert admit(e, "extra").message == "namespace team-a: memory-qos class gold at capacity 10/10"
    store.apply("DELETED", make_pod("pod-u3", "team-a", uid="u3"))
    assert admit(e, "extra").allowed  # the deleted pod's lingering reservation does not count either
    assert not admit(e, "extra2").allowed


def test_finished_pods_free_capacity() -> None:
    store = synced_store()
    e = engine(store)
    for i in range(10):
        assert admit(e, f"u{i}").allowed
        store.apply("ADDED", make_pod(f"pod-u{i}", "team-a", uid=f"u{i}"))
    store.apply("MODIFIED", make_pod("pod-u0", "team-a", uid="u0", phase="Succeeded"))
    assert admit(e, "next").allowed


def test_reservations_expire_after_ttl() -> None:
    clock = Clock()
    e = engine(clock=clock, ttl=30)
    for i in range(10):
        assert admit(e, f"u{i}").allowed  # none of these pods ever appears (e.g. storage failed)
    assert not admit(e, "late").allowed
    clock.now += 29.9
    assert not admit(e, "late").allowed
    clock.now += 0.2
    assert admit(e, "late").allowed
    assert list(e.reservations("team-a")) == ["late"]


def test_dry_run_is_decided_but_never_recorded() -> None:
    e = engine()
    for i in range(10):
        assert admit(e, f"d{i}", dry_run=True).allowed
    assert e.reservations("team-a") == {}
    for i in range(10):
        assert admit(e, f"u{i}").allowed
    outcome = admit(e, "d", dry_run=True)
    assert not outcome.allowed and "at capacity 10/10" in outcome.message


def test_same_uid_is_not_counted_twice() -> None:
    # The apiserver may call again for the same object (a retried webhook call): one reservation.
    e = engine()
    for _ in range(3):
        assert admit(e, "same").allowed
    assert len(e.reservations("team-a")) == 1


def test_no_quota_is_unrestricted_and_unrecorded() -> None:
    e = engine(quotas={"other": [QUOTA]})
    assert all(admit(e, f"u{i}").allowed for i in range(50))
    assert e.reservations("team-a") == {}


def test_cluster_default_quota() -> None:
    e = engine(quotas={"*": [QUOTA]})
    assert sum(admit(e, f"u{i}", ns="anywhere").allowed for i in range(12)) == 10


def test_unsynced_cache_fails_closed_with_retryable_503() -> None:
    e = engine(store=PodStore())
    outcome = admit(e, "u")
    assert not outcome.allowed and outcome.code == 503 and outcome.reason == "ServiceUnavailable"
    assert "pod cache is still syncing" in outcome.message and "retry" in outcome.message
    assert not e.ready


def test_ledger_failure_fails_closed() -> None:
    class Broken(LocalBook):
        def update(self, mutate):
            raise ConnectionError("connection refused")

    e = engine(books=lambda ns: Broken())
    outcome = admit(e, "u")
    assert outcome.code == 503
    assert outcome.message == ("quota cannot be checked right now (namespace team-a: quota ledger unavailable: "
                               "connection refused); retry the request")


def test_invalid_quota_in_force_refuses() -> None:
    class Invalid(StaticQuotas):
        def quotas_for(self, namespace):
            from qosgate.webhook.quota.source import QuotaLookup
            return QuotaLookup((), ("configmap team-a/q: data: missing key 'quota.yaml'",))

    e = QuotaEngine(synced_store(), Invalid({}), clock=Clock())
    outcome = admit(e, "u")
    assert outcome.code == 403 and "missing key 'quota.yaml'" in outcome.message


def test_warn_and_dryrun_enforcement() -> None:
    warn = load_quota_yaml("enforcement: warn\npod: [{name: memory-qos, classes: [{name: gold, capacity: 1}]}]", "w")
    e = engine(quotas={"team-a": [warn]})
    assert admit(e, "a").allowed and admit(e, "a2").warnings
    outcome = admit(e, "b")
    assert outcome.allowed and outcome.warnings == ("namespace team-a: memory-qos class gold at capacity 2/1",)
    dry = load_quota_yaml("enforcement: dryrun\npod: []", "d")
    outcome = admit(engine(quotas={"team-a": [dry]}), "c")
    assert outcome.allowed and outcome.warnings == () and "not allowed" in outcome.audit[0]


def test_replicas_sharing_one_book_are_exact() -> None:
    # Two replicas, each with its own cache, sharing the reservation book (what the ledger ConfigMap is).
    shared = shared_books()
    clock = Clock()
    a, b = engine(clock=clock, books=shared), engine(clock=clock, books=shared)
    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(lambda i: admit(a if i % 2 else b, f"u{i}"), range(100)))
    assert sum(o.allowed for o in outcomes) == 10


def test_lagging_replica_keeps_counting_through_per_pod_reservations() -> None:
    shared = shared_books()
    clock = Clock()
    fast, slow = synced_store(), synced_store()
    a = engine(fast, clock, shared, observed_grace=5, allowances=False)
    b = engine(slow, clock, shared, observed_grace=5, allowances=False)
    for i in range(10):
        assert admit(a, f"u{i}").allowed
        fast.apply("ADDED", make_pod(f"pod-u{i}", "team-a", uid=f"u{i}"))
    clock.now += 10  # past the grace: replica a prunes what it has seen when it next writes
    assert not admit(b, "x").allowed  # b's cache is empty, but the ledger still holds the reservations
    assert admit(a, "silver", SILVER).allowed  # a write by a: prunes the observed gold entries
    assert set(a.reservations("team-a")) == {"silver"}
    # Past the grace, replica b's watch is expected to have caught up; until it does it would under-count.
    for i in range(10):
        slow.apply("ADDED", make_pod(f"pod-u{i}", "team-a", uid=f"u{i}"))
    assert not admit(b, "x").allowed


def test_group_commit_batches_queued_requests() -> None:
    gate = threading.Event()
    entered = threading.Event()

    class Slow(LocalBook):
        def update(self, mutate):
            entered.set()
            gate.wait()
            return super().update(mutate)

    book = Slow()
    e = engine(books=lambda ns: book)
    with ThreadPoolExecutor(20) as pool:
        first = pool.submit(admit, e, "leader")
        entered.wait()
        rest = [pool.submit(admit, e, f"u{i}") for i in range(19)]
        eventually(lambda: len(e._commit._lanes["team-a"].queue) == 19)
        gate.set()
        outcomes = [first.result(), *(f.result() for f in rest)]
    assert sum(o.allowed for o in outcomes) == 10
    assert e.stats.batches == 2 and e.stats.batched_requests == 20


def test_waiting_beyond_the_timeout_fails_closed() -> None:
    gate = threading.Event()

    class Stuck(LocalBook):
        def update(self, mutate):
            gate.wait()
            return super().update(mutate)

    book = Stuck()
    e = engine(books=lambda ns: book, wait_timeout=0.05)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(admit, e, "leader")
        eventually(lambda: e._commit._lanes.get("team-a") is not None and e._commit._lanes["team-a"].busy)
        outcome = admit(e, "follower")
        gate.set()
        assert first.result().allowed
    assert outcome.code == 503 and "timed out waiting" in outcome.message
    assert "follower" not in e.reservations("team-a")


def test_single_replica_book_drops_observed_reservations_at_once() -> None:
    store = synced_store()
    books = local_books()
    e = engine(store, books=books)
    assert admit(e, "a").allowed
    store.apply("ADDED", make_pod("pod-a", "team-a", uid="a"))
    assert admit(e, "b").allowed
    assert set(books("team-a").read()) == {"b"}


def test_reservation_codec_round_trip_and_garbage() -> None:
    r = QuotaReservation(ClassAssignments((("memory-qos", "gold"),), (("memory-qos", "silver"),) * 2), 5, 12.5, 2.0,
                         "p")
    assert QuotaReservation.decode(r.encode()) == r
    assert QuotaReservation.decode("{") is None
    assert QuotaReservation.decode('{"p": 1}') is None


def test_garbage_ledger_entries_are_ignored_and_pruned() -> None:
    book = LocalBook()
    book.update(lambda data: data.update({"junk": "not json"}))
    e = engine(books=lambda ns: book)
    assert admit(e, "u").allowed
    assert set(book.read()) == {"u"}


def test_classless_assignments_skip_everything() -> None:
    e = engine(store=PodStore())  # not even synced
    assert e.admit("team-a", "u", "p", ClassAssignments(), 0, False).allowed


@pytest.mark.parametrize("n", [1, 5])
def test_container_capacity(n: int) -> None:
    quota = load_quota_yaml("container: [{name: memory-qos, classes: [{name: silver, capacity: 5}]}]", "q")
    e = engine(quotas={"team-a": [quota]})
    request = ClassAssignments(container_level=(("memory-qos", "silver"),) * n)
    admitted = sum(admit(e, f"u{i}", request).allowed for i in range(10))
    assert admitted * n <= 5 and (admitted + 1) * n > 5


def test_time_module_default_clock() -> None:
    e = QuotaEngine(synced_store(), StaticQuotas({"team-a": [QUOTA]}))
    before = time.time()
    assert admit(e, "u").allowed
    assert e.reservations("team-a")["u"].expires >= before + 30 - 0.001  # stored to the millisecond


def test_metrics_samples() -> None:
    e = engine()
    assert admit(e, "u").allowed
    samples = {(name, tuple(labels.items())): value for name, _, labels, value in e.samples()}
    assert samples[("qosgate_quota_admissions", (("outcome", "admitted"),))] == 1
    assert samples[("qosgate_quota_ready", ())] == 1.0
