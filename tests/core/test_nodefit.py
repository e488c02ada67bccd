"""Node-fit decisions: examples for the messages, hypothesis properties for the arithmetic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from qosgate.core.nodefit import MAX_SCORE, check_fit, class_problem, protectable, score

GI = 2**30


@dataclass(frozen=True)
class Node:
    """Structural stand-in for NodeRecord: nodefit only reads these four fields."""

    name: str = "n1"
    allocatable_memory: int = 32 * GI
    protectable_override: int | None = None
    offered_classes: Mapping[str, Mapping[str, int]] | None = None


def test_protectable_percent_and_override() -> None:
    assert protectable(Node(allocatable_memory=40 * GI), 90) == 36 * GI
    assert protectable(Node(allocatable_memory=10, protectable_override=None), 33) == 3
    assert protectable(Node(allocatable_memory=40 * GI, protectable_override=7 * GI), 90) == 7 * GI
    # An explicit zero override means "protect nothing here" — it must not fall back to the percentage.
    assert protectable(Node(protectable_override=0), 90) == 0


def test_reason_is_worded_alike_on_every_node_and_the_detail_names_the_numbers() -> None:
    # kube-scheduler counts identical reasons into one line of the FailedScheduling event.
    fits = [check_fit(6 * GI, frozenset(), Node(protectable_override=budget), used, 0, {}, 90)
            for budget, used in ((28 * GI, 26 * GI), (12 * GI, 7 * GI))]
    assert {fit.reason for fit in fits} == {"memory.min 6Gi exceeds the free protectable memory"}
    assert not any(fit.ok or fit.unresolvable for fit in fits)
    assert [fit.detail for fit in fits] == ["2Gi of 28Gi free", "5Gi of 12Gi free"]
    assert fits[0].message == "memory.min 6Gi exceeds the free protectable memory (2Gi of 28Gi free)"


def test_bigger_than_the_whole_node_is_unresolvable() -> None:
    fit = check_fit(30 * GI, frozenset(), Node(protectable_override=28 * GI), 0, 0, {}, 90)
    assert not fit.ok and fit.unresolvable
    assert "30Gi" in fit.reason and fit.detail == "28Gi"


def test_exact_fill_fits() -> None:
    node = Node(protectable_override=10 * GI)
    assert check_fit(4 * GI, frozenset(), node, 3 * GI, 3 * GI, {}, 90).ok
    assert not check_fit(4 * GI + 1, frozenset(), node, 3 * GI, 3 * GI, {}, 90).ok


def test_classes_offered_capacity_and_unlimited() -> None:
    node = Node(offered_classes={"memory-qos": {"gold": 2, "silver": 0}})
    gold = frozenset({("memory-qos", "gold")})
    silver = frozenset({("memory-qos", "silver")})
    assert check_fit(0, gold, node, 0, 0, {("memory-qos", "gold"): 1}, 90).ok
    full = check_fit(0, gold, node, 0, 0, {("memory-qos", "gold"): 2}, 90)
    assert not full.ok and not full.unresolvable
    assert (full.reason, full.detail) == ("memory-qos class gold is full", "2 of 2 used")
    assert check_fit(0, silver, node, 0, 0, {("memory-qos", "silver"): 10_000}, 90).ok

    missing = check_fit(0, frozenset({("memory-qos", "bronze")}), node, 0, 0, {}, 90)
    assert missing.unresolvable and "bronze" in missing.reason and missing.detail == "offers: gold, silver"
    other = check_fit(0, frozenset({("example.com/blockio", "slow")}), node, 0, 0, {}, 90)
    assert other.unresolvable and "example.com/blockio" in other.reason


def test_node_without_class_information_offers_everything() -> None:
    assert class_problem(frozenset({("memory-qos", "gold")}), Node(offered_classes=None), {}).ok


def test_both_problems_are_named() -> None:
    node = Node(protectable_override=8 * GI, offered_classes={"memory-qos": {"gold": 1}})
    fit = check_fit(4 * GI, frozenset({("memory-qos", "gold")}), node, 6 * GI, 0,
                    {("memory-qos", "gold"): 1}, 90)
    assert not fit.ok and "memory.min" in fit.reason and "gold is full" in fit.reason


def test_unresolvable_class_wins_over_memory() -> None:
    node = Node(protectable_override=8 * GI, offered_classes={"memory-qos": {"gold": 1}})
    fit = check_fit(4 * GI, frozenset({("memory-qos", "silver")}), node, 6 * GI, 0, {}, 90)
    assert fit.unresolvable


sizes = st.integers(min_value=0, max_value=2**45)


@given(pod=sizes, bound=sizes, reserved=sizes, budget=sizes)
def test_fit_iff_sum_within_protectable(pod: int, bound: int, reserved: int, budget: int) -> None:
    fit = check_fit(pod, frozenset(), Node(protectable_override=budget), bound, reserved, {}, 90)
    if pod == 0:
        assert fit.ok  # asks nothing of the budget, even on an overcommitted node
    else:
        assert fit.ok == (bound + reserved + pod <= budget)
        assert fit.unresolvable == (pod > budget)


@given(pod=sizes, used=sizes, allocatable=sizes, percent=st.integers(min_value=0, max_value=100))
def test_fit_iff_sum_within_percentage(pod: int, used: int, allocatable: int, percent: int) -> None:
    fit = check_fit(pod, frozenset(), Node(allocatable_memory=allocatable), used, 0, {}, percent)
    assert fit.ok == (pod == 0 or used + pod <= allocatable * percent // 100)


@given(free=st.integers(min_value=-(2**40), max_value=2**46), budget=st.integers(min_value=0, max_value=2**45))
def test_scores_in_range(free: int, budget: int) -> None:
    for strategy in ("spread", "binpack"):
        assert 0 <= score(free, budget, strategy) <= MAX_SCORE


@given(a=sizes, b=sizes, budget=st.integers(min_value=1, max_value=2**45))
def test_scores_monotone(a: int, b: int, budget: int) -> None:
    low, high = sorted((min(a, budget), min(b, budget)))
    assert score(low, budget, "spread") <= score(high, budget, "spread")
    assert score(low, budget, "binpack") >= score(high, budget, "binpack")


def test_score_ends() -> None:
    assert score(10 * GI, 10 * GI, "spread") == MAX_SCORE
    assert score(0, 10 * GI, "spread") == 0
    assert score(0, 10 * GI, "binpack") == MAX_SCORE
    assert score(10 * GI, 10 * GI, "binpack") == 0
