"""Quota parsing (every bad field named) and decisions (messages with numbers; hypothesis: never over capacity)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.core.errors import InvalidError
from qosgate.core.qosresources import ClassAssignments
from qosgate.core.quota import (
    ClassLimit,
    Quota,
    Usage,
    add_usage,
    allow_list_verdict,
    combined_usage,
    decide,
    evaluate,
    load_quota_yaml,
    quota_from_configmap,
    quotas_in_force,
)

GI = 2**30

QUOTA_YAML = """
enforcement: deny
pod:
- name: memory-qos
  classes:
  - {name: gold, capacity: 5, maxMemoryMin: 64Gi}
  - {name: silver}
  - {name: bronze, capacity: 0}
container:
- name: memory-qos
  classes:
  - {name: silver, capacity: 3}
"""


def quota(text: str = QUOTA_YAML) -> Quota:
    return load_quota_yaml(text, "q")


def pod_level(*pairs: tuple[str, str]) -> ClassAssignments:
    return ClassAssignments(pod_level=tuple(pairs))


def containers(*pairs: tuple[str, str]) -> ClassAssignments:
    return ClassAssignments(container_level=tuple(pairs))


GOLD = ("memory-qos", "gold")
SILVER = ("memory-qos", "silver")
BRONZE = ("memory-qos", "bronze")


def test_parse_full_shape() -> None:
    q = quota()
    assert q.enforcement == "deny"
    assert q.pod["memory-qos"]["gold"] == ClassLimit("gold", 5, 64 * GI)
    assert q.pod["memory-qos"]["silver"] == ClassLimit("silver", 0, None)
    assert q.container["memory-qos"]["silver"].capacity == 3
    assert q.class_names() == [GOLD, SILVER, BRONZE]


def test_defaults_and_empty_document() -> None:
    assert quota("pod: []").enforcement == "deny"
    empty = quota("")
    assert empty.pod == {} and empty.container == {}
    assert not decide(empty, {}, pod_level(GOLD), 0, "ns").allowed


def test_every_bad_field_is_named() -> None:
    text = """
enforcement: block
extra: 1
pod:
- name: memory-qos
  classes:
  - {name: gold, capacity: -1, maxMemoryMin: lots, colour: red}
  - {name: gold}
  - {name: "bad name!"}
  - {name: silver, capacity: true}
- name: memory-qos
  classes: [{name: gold}]
- {name: "", classes: [{name: x}]}
- {name: other, classes: []}
container: {memory-qos: gold}
"""
    with pytest.raises(InvalidError) as info:
        load_quota_yaml(text, "configmap team-a/q")
    paths = [e.path for e in info.value.errors]
    assert paths == [
        "configmap team-a/q: extra",
        "configmap team-a/q: enforcement",
        "configmap team-a/q: pod[0].classes[0].colour",
        "configmap team-a/q: pod[0].classes[0].capacity",
        "configmap team-a/q: pod[0].classes[0].maxMemoryMin",
        "configmap team-a/q: pod[0].classes[1].name",
        "configmap team-a/q: pod[0].classes[2].name",
        "configmap team-a/q: pod[0].classes[3].capacity",
        "configmap team-a/q: pod[1].name",
        "configmap team-a/q: pod[2].name",
        "configmap team-a/q: pod[3].classes",
        "configmap team-a/q: container",
    ]
    assert "must be one of deny, warn, dryrun" in str(info.value)
    assert "'lots' is not a valid quantity" in str(info.value)


def test_yaml_and_type_errors() -> None:
    with pytest.raises(InvalidError, match="not valid YAML"):
        load_quota_yaml("pod: [", "q")
    with pytest.raises(InvalidError, match="must be a mapping"):
        load_quota_yaml("- a", "q")
    with pytest.raises(InvalidError, match="must be a string"):
        load_quota_yaml(3, "q")


def test_from_configmap_names_keys() -> None:
    cm = {"metadata": {"namespace": "team-a", "name": "q"}, "data": {"quota.yml": "pod: []"}}
    with pytest.raises(InvalidError) as info:
        quota_from_configmap(cm)
    assert [e.path for e in info.value.errors] == ["configmap team-a/q: data[quota.yml]", "configmap team-a/q: data"]
    cm["data"] = {"quota.yaml": "pod: [{name: memory-qos, classes: [{name: gold, capacity: x}]}]"}
    with pytest.raises(InvalidError, match=r"configmap team-a/q: data\[quota.yaml\]: pod\[0\].classes\[0\].capacity"):
        quota_from_configmap(cm)
    cm["data"] = {"quota.yaml": QUOTA_YAML}
    assert quota_from_configmap(cm).source == "configmap team-a/q"


def test_capacity_message() -> None:
    usage = {GOLD: Usage(pods=5, memory_min=10 * GI)}
    decision = decide(quota(), usage, pod_level(GOLD), GI, "team-a")
    assert decision == decide(quota(), usage, pod_level(GOLD), GI, "team-a")
    assert not decision.allowed
    assert decision.messages == ("namespace team-a: memory-qos class gold at capacity 5/5",)
    assert decide(quota(), {GOLD: Usage(pods=4)}, pod_level(GOLD), GI, "team-a").allowed


def test_not_allowed_message_lists_allowed_classes() -> None:
    q = quota("pod: [{name: memory-qos, classes: [{name: silver}, {name: bronze}]}]")
    assert decide(q, {}, pod_level(GOLD), 0, "team-a").messages == (
        "namespace team-a: memory-qos class gold not allowed (allowed: silver, bronze)",)
    # Pod level and container level are separate allow-lists.
    assert decide(q, {}, containers(SILVER), 0, "team-a").messages == (
        "namespace team-a: memory-qos class silver not allowed for containers (allowed: none)",)
    assert decide(q, {}, pod_level(("example.com/blockio", "fast")), 0, "team-a").messages == (
        "namespace team-a: example.com/blockio class fast not allowed (allowed: none)",)


def test_max_memory_min_message() -> None:
    usage = {GOLD: Usage(pods=1, memory_min=60 * GI)}
    decision = decide(quota(), usage, pod_level(GOLD), 8 * GI, "team-a")
    assert decision.messages == (
        "namespace team-a: memory-qos class gold maxMemoryMin 64Gi would be exceeded (60Gi used + 8Gi requested)",)
    assert decide(quota(), usage, pod_level(GOLD), 4 * GI, "team-a").allowed


def test_tighter_memory_cap_applies_across_levels() -> None:
    q = quota("""
pod: [{name: memory-qos, classes: [{name: silver, maxMemoryMin: 10Gi}]}]
container: [{name: memory-qos, classes: [{name: silver, maxMemoryMin: 4Gi}]}]
""")
    decision = decide(q, {SILVER: Usage(pods=1, memory_min=3 * GI)}, pod_level(SILVER), 2 * GI, "ns")
    assert decision.messages == (
        "namespace ns: memory-qos class silver maxMemoryMin 4Gi would be exceeded (3Gi used + 2Gi requested)",)


def test_container_capacity_counts_containers() -> None:
    request = containers(SILVER, SILVER)
    assert decide(quota(), {SILVER: Usage(containers=1)}, request, 0, "ns").allowed
    decision = decide(quota(), {SILVER: Usage(containers=2)}, request, 0, "ns")
    assert decision.messages == ("namespace ns: memory-qos class silver at container capacity 2/3 (2 requested)",)
    # Pod-level silver is unlimited, and counted separately from containers.
    assert decide(quota(), {SILVER: Usage(pods=1000, containers=3)}, pod_level(SILVER), 0, "ns").allowed


def test_all_reasons_reported() -> None:
    usage = {GOLD: Usage(pods=5, memory_min=64 * GI)}
    request = ClassAssignments(pod_level=(GOLD,), container_level=(BRONZE,))
    messages = decide(quota(), usage, request, GI, "ns").messages
    assert len(messages) == 3
    assert "at capacity 5/5" in messages[0]
    assert "bronze not allowed for containers (allowed: silver)" in messages[1]
    assert "maxMemoryMin" in messages[2]


def test_evaluate_folds_enforcement_modes() -> None:
    deny = quota()
    warn = Quota("w", "warn", pod={"memory-qos": {"silver": ClassLimit("silver")}})
    dry = Quota("d", "dryrun", pod={})
    verdict = evaluate([deny, warn, dry], {}, pod_level(GOLD), 0, "ns")
    assert verdict.admitted
    assert verdict.warnings == ("namespace ns: memory-qos class gold not allowed (allowed: silver)",)
    assert verdict.audit == ("namespace ns: memory-qos class gold not allowed (allowed: none)",)
    assert evaluate([], {}, pod_level(GOLD), 0, "ns").admitted
    assert not evaluate([deny], {GOLD: Usage(pods=5)}, pod_level(GOLD), 0, "ns").admitted


def test_allow_list_ignores_capacity() -> None:
    tight = quota("pod: [{name: memory-qos, classes: [{name: gold, capacity: 1, maxMemoryMin: 1}]}]")
    assert allow_list_verdict([tight], pod_level(GOLD), "ns").admitted
    assert not allow_list_verdict([tight], pod_level(SILVER), "ns").admitted


def test_quotas_in_force() -> None:
    own, default = [quota()], [quota("pod: []")]
    assert quotas_in_force(own, default) is own
    assert quotas_in_force([], default) is default


def test_usage_arithmetic_matches_store_counting() -> None:
    usage: dict = {}
    request = ClassAssignments(pod_level=(GOLD,), container_level=(GOLD, SILVER, SILVER))
    add_usage(usage, request, 7)
    assert usage[GOLD] == Usage(pods=1, containers=1, memory_min=7)
    assert usage[SILVER] == Usage(pods=0, containers=2, memory_min=7)
    combined = combined_usage({GOLD: Usage(2, 0, 3)}, [(request, 7)])
    assert combined[GOLD] == Usage(3, 1, 10)
    add_usage(combined, request, 7, sign=-1)
    assert combined[GOLD] == Usage(2, 0, 3)


# --- properties -------------------------------------------------------------------------------------------

RESOURCES = ("memory-qos", "example.com/io")
CLASSES = ("gold", "silver", "bronze")
KEYS = [(r, c) for r in RESOURCES for c in CLASSES]

limits = st.builds(ClassLimit, name=st.just("x"), capacity=st.integers(0, 6),
                   max_memory_min=st.none() | st.integers(0, 40))


@st.composite
def quotas(draw: st.DrawFn) -> Quota:
    levels = []
    for _ in range(2):
        listed = draw(st.dictionaries(st.sampled_from(KEYS), limits, max_size=len(KEYS)))
        level: dict[str, dict[str, ClassLimit]] = {}
        for (resource, klass), limit in listed.items():
            level.setdefault(resource, {})[klass] = ClassLimit(klass, limit.capacity, limit.max_memory_min)
        levels.append(level)
    return Quota("q", "deny", pod=levels[0], container=levels[1])


@st.composite
def requests(draw: st.DrawFn) -> tuple[ClassAssignments, int]:
    pod = draw(st.lists(st.sampled_from(KEYS), max_size=2, unique_by=lambda k: k[0]))
    ctr = draw(st.lists(st.sampled_from(KEYS), max_size=4))
    return ClassAssignments(pod_level=tuple(pod), container_level=tuple(ctr)), draw(st.integers(0, 12))


@settings(max_examples=300, deadline=None)
@given(quotas(), st.lists(requests(), max_size=40))
def test_admitting_while_allowed_never_exceeds_limits(q: Quota, stream: list[tuple[ClassAssignments, int]]) -> None:
    usage: dict = {}
    for request, memory_min in stream:
        if decide(q, usage, request, memory_min, "ns").allowed:
            add_usage(usage, request, memory_min)
    for (resource, klass), used in usage.items():
        pod_limit = q.pod.get(resource, {}).get(klass)
        ctr_limit = q.container.get(resource, {}).get(klass)
        # Nothing unlisted was ever admitted at either level.
        assert used.pods == 0 or pod_limit is not None
        assert used.containers == 0 or ctr_limit is not None
        if pod_limit and pod_limit.capacity:
            assert used.pods <= pod_limit.capacity
        if ctr_limit and ctr_limit.capacity:
            assert used.containers <= ctr_limit.capacity
        caps = [limit.max_memory_min for limit in (pod_limit, ctr_limit)
                if limit is not None and limit.max_memory_min is not None]
        if caps:
            assert used.memory_min <= min(caps)


@settings(max_examples=200, deadline=None)
@given(quotas(), st.lists(requests(), max_size=20), requests())
def test_decision_is_monotonic_in_usage(q: Quota, history: list[tuple[ClassAssignments, int]],
                                        probe: tuple[ClassAssignments, int]) -> None:
    """More usage never turns a denial into an admission (what makes reservations safe to over-count)."""
    usage: dict = {}
    for request, memory_min in history:
        before = decide(q, usage, *probe, "ns").allowed
        add_usage(usage, request, memory_min)
        after = decide(q, usage, *probe, "ns").allowed
        assert before or not after
