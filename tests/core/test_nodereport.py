"""The node report: wire form, garbage tolerance, Lease naming, staleness (qosgate.core.nodereport)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st

from qosgate.core.annotations import NODE_REPORT
from qosgate.core.nodereport import (
    MAX_PROBLEMS,
    NodeReport,
    encode,
    is_fresh,
    lease_name,
    lease_object,
    materially_changed,
    parse,
    read_lease,
)

NOW = datetime(2026, 10, 1, 12, 0, 0, tzinfo=UTC)
size = st.integers(0, 2**62)
reports = st.builds(
    NodeReport,
    node=st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?", fullmatch=True),
    observed_at=st.just("2026-10-01T12:00:00Z"),
    cgroup_v2=st.booleans(), memory_controller=st.booleans(), recursive_prot=st.one_of(st.none(), st.booleans()),
    kubelet_policy=st.sampled_from(["none", "legacy", "tiered", "unknown"]),
    protectable_bytes=size, kubepods_min_bytes=size, demanded_bytes=size, kernel_protected_bytes=size,
    kernel_protected_now_bytes=size, outside_kubepods_min_bytes=size, accounted_bytes=size, drift_bytes=size,
    overcommit_bytes=size, nri_honoured=st.one_of(st.none(), st.booleans()), nri_mismatches=st.integers(0, 1000),
    offered_classes=st.one_of(st.none(), st.just("memory-qos=gold,silver"), st.just("")),
    problems=st.lists(st.text(max_size=50), max_size=5).map(tuple),
    kubelet_policy_source=st.sampled_from(["observed", "flag"]),
    offered_classes_source=st.sampled_from(["nri-config", "admin", "none"]),
)


def sample(**changes) -> NodeReport:
    base = NodeReport(node="n1", observed_at="2026-10-01T12:00:00Z", cgroup_v2=True, memory_controller=True,
                      recursive_prot=True, kubelet_policy="tiered", protectable_bytes=8 << 30,
                      kubepods_min_bytes=1 << 30, demanded_bytes=1 << 30, kernel_protected_bytes=1 << 30,
                      kernel_protected_now_bytes=1 << 29, outside_kubepods_min_bytes=0, accounted_bytes=1 << 30,
                      drift_bytes=0, overcommit_bytes=0, nri_honoured=True, nri_mismatches=0,
                      offered_classes="memory-qos=gold", problems=())
    return replace(base, **changes)


@given(reports)
def test_encode_parse_round_trips(report) -> None:
    assert parse(encode(report)).report == report


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), st.none(), st.integers(),
                 st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                                        st.text(max_size=10)),
                              lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=10), c,
                                                                                           max_size=4)),
                              max_leaves=10).map(lambda d: orjson.dumps(d).decode())))
def test_parse_never_raises_on_garbage(text) -> None:
    parsed = parse(text)
    assert (parsed.report is None) == (parsed.problem is not None)


@given(reports, st.sampled_from(["protectableBytes", "cgroupV2", "kubeletPolicy", "nriHonoured", "problems", "node"]),
       st.one_of(st.just(-1), st.just("x"), st.just(1.5), st.just([1]), st.just({}), st.just("sometimes")))
def test_parse_refuses_wrongly_typed_fields(report, field, value) -> None:
    doc = orjson.loads(encode(report))
    doc[field] = value
    parsed = parse(orjson.dumps(doc))
    if field == "node" and isinstance(value, str):
        assert parsed.report is not None
    else:
        assert parsed.report is None and field in (parsed.problem or "")


def test_parse_accepts_unknown_fields_but_not_a_newer_schema() -> None:
    doc = orjson.loads(encode(sample()))
    assert parse(orjson.dumps({**doc, "futureField": 1})).report == sample()
    assert "schema 2" in (parse(orjson.dumps({**doc, "schema": 2})).problem or "")
    assert parse(orjson.dumps({k: v for k, v in doc.items() if k != "node"})).problem == "report: node missing"


def test_problems_are_trimmed_on_the_wire() -> None:
    report = sample(problems=tuple(f"p{i}" * 200 for i in range(50)))
    parsed = parse(encode(report)).report
    assert parsed is not None and len(parsed.problems) == MAX_PROBLEMS + 1
    assert all(len(p) <= 240 for p in parsed.problems)


def test_lease_name() -> None:
    assert lease_name("node-1") == "qosgate-node-node-1"
    long = "n" * 250
    expected = "qosgate-node-" + "n" * 40 + "-" + hashlib.sha256(long.encode()).hexdigest()[:16]
    assert lease_name(long) == expected and len(expected) == 13 + 40 + 1 + 16
    assert lease_name("n" * 240) == "qosgate-node-" + "n" * 240  # exactly 253


def test_freshness() -> None:
    assert is_fresh(NOW, 90, NOW + timedelta(seconds=90))
    assert not is_fresh(NOW, 90, NOW + timedelta(seconds=91))
    assert not is_fresh(None, 90, NOW) and not is_fresh(NOW, None, NOW) and not is_fresh(NOW, True, NOW)


def test_read_lease_checks_name_holder_node_and_age() -> None:
    lease = lease_object(sample(), "2026-10-01T12:00:00.000000Z", 90)
    assert read_lease(lease, "n1", NOW + timedelta(seconds=30)).usable
    stale = read_lease(lease, "n1", NOW + timedelta(seconds=91))
    assert stale.report == sample() and not stale.usable and stale.problem == "report is stale"
    assert "not 'qosgate-node-n2'" in (read_lease(lease, "n2", NOW).problem or "")
    other = lease_object(sample(node="n2"), "2026-10-01T12:00:00.000000Z", 90)
    other["metadata"]["name"] = "qosgate-node-n1"
    other["spec"]["holderIdentity"] = "n1"
    assert "names node 'n2'" in (read_lease(other, "n1", NOW).problem or "")
    lease["metadata"]["annotations"][NODE_REPORT] = "{"
    assert not read_lease(lease, "n1", NOW).usable
    assert read_lease(None, "n1", NOW).problem == "no report"
    assert not read_lease({"metadata": "x", "spec": 3}, "n1", NOW).usable


def test_material_changes() -> None:
    base = sample()
    assert materially_changed(None, base)
    assert not materially_changed(base, replace(base, observed_at="2026-10-01T12:00:30Z"))
    assert not materially_changed(base, replace(base, kernel_protected_now_bytes=0))
    assert not materially_changed(base, replace(base, kubepods_min_bytes=base.kubepods_min_bytes + 4096))
    assert materially_changed(base, replace(base, kubepods_min_bytes=base.kubepods_min_bytes + (64 << 20)))
    assert materially_changed(base, replace(base, overcommit_bytes=4096))
    assert materially_changed(base, replace(base, kubelet_policy="none"))
    assert materially_changed(base, replace(base, problems=("x",)))
