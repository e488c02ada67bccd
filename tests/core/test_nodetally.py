"""NodeTally: bound pods and reservations per node, handed over in one step."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.core.nodetally import BindReservation, NodeTally

GOLD = ("memory-qos", "gold")


def reservation(uid: str, node: str, memory: int, classes: frozenset = frozenset()) -> BindReservation:
    return BindReservation(uid, "ns", uid, node, memory, classes, deadline=0.0)


def test_bound_pod_replaces_its_reservation_in_one_call() -> None:
    ledger = NodeTally()
    ledger.reserve(reservation("p", "a", 5, frozenset({GOLD})))
    assert ledger.used_memory("a") == 5 and ledger.class_counts("a") == {GOLD: 1}
    ledger.observe("p", "a", True, 5, frozenset({GOLD}))
    assert (ledger.bound_memory, ledger.reserved_memory) == ({"a": 5}, {})
    assert ledger.class_counts("a") == {GOLD: 1} and len(ledger) == 0


def test_pending_event_keeps_the_reservation_and_end_releases_it() -> None:
    ledger = NodeTally()
    ledger.reserve(reservation("p", "a", 5))
    ledger.observe("p", "", True, 5, frozenset())  # still pending on the watch
    assert ledger.used_memory("a") == 5
    ledger.observe("p", "", False, 5, frozenset())  # failed before binding
    assert ledger.used_memory("a") == 0 and len(ledger) == 0


def test_finished_and_deleted_pods_stop_counting() -> None:
    ledger = NodeTally()
    ledger.observe("p", "a", True, 5, frozenset())
    ledger.observe("q", "a", True, 3, frozenset())
    ledger.observe("p", "a", False, 5, frozenset())  # Succeeded
    ledger.observe("q", "", False, 0, frozenset(), exists=False)  # deleted
    assert ledger.bound_memory == {} and ledger.bound_classes == {}


def test_replaying_an_event_is_harmless() -> None:
    ledger = NodeTally()
    for _ in range(3):
        ledger.observe("p", "a", True, 5, frozenset({GOLD}))
    assert ledger.bound_memory == {"a": 5} and ledger.bound_classes == {"a": {GOLD: 1}}


def test_own_reservation_is_excluded_on_request() -> None:
    ledger = NodeTally()
    ledger.reserve(reservation("p", "a", 5, frozenset({GOLD})))
    ledger.reserve(reservation("q", "a", 2, frozenset({GOLD})))
    assert ledger.used_memory("a", exclude_uid="p") == 2
    assert ledger.class_counts("a", exclude_uid="p") == {GOLD: 1}


def test_re_reserving_the_same_node_counts_once() -> None:
    ledger = NodeTally()
    ledger.reserve(reservation("p", "a", 5))
    ledger.reserve(reservation("p", "a", 5))
    assert ledger.used_memory("a") == 5 and len(ledger) == 1


ops = st.lists(st.tuples(
    st.sampled_from(["reserve", "release", "bind", "pending", "finish", "delete"]),
    st.sampled_from(["p1", "p2", "p3", "p4"]),
    st.sampled_from(["a", "b"]),
    st.integers(min_value=0, max_value=8),
    st.booleans(),
), max_size=60)


@settings(max_examples=200)
@given(ops)
def test_totals_always_equal_a_recount(sequence: list) -> None:
    ledger = NodeTally()
    bound: dict[str, tuple[str, int, frozenset]] = {}
    reserved: dict[tuple[str, str], tuple[int, frozenset]] = {}
    for op, uid, node, memory, gold in sequence:
        classes = frozenset({GOLD}) if gold else frozenset()
        if op == "reserve":
            ledger.reserve(reservation(uid, node, memory, classes))
            reserved[(uid, node)] = (memory, classes)
        elif op == "release":
            ledger.release(uid, node)
            reserved.pop((uid, node), None)
        else:
            exists, active = op != "delete", op in ("bind", "pending")
            where = node if op == "bind" else ""
            ledger.observe(uid, where, active, memory, classes, exists=exists)
            if exists and active and where and (memory or classes):
                bound[uid] = (where, memory, classes)
            else:
                bound.pop(uid, None)
            if not exists or not active or where:
                reserved = {k: v for k, v in reserved.items() if k[0] != uid}
        for name in ("a", "b"):
            expect = sum(m for n, m, _ in bound.values() if n == name)
            expect += sum(m for (_, n), (m, _) in reserved.items() if n == name)
            assert ledger.used_memory(name) == expect
            gold_count = sum(1 for n, _, c in bound.values() if n == name and c) + \
                sum(1 for (_, n), (_, c) in reserved.items() if n == name and c)
            assert ledger.class_counts(name).get(GOLD, 0) == gold_count
