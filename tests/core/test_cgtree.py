"""Kubelet cgroup naming, both drivers and both runtimes (qosgate.core.cgtree)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qosgate.core.cgtree import (
    BESTEFFORT,
    BURSTABLE,
    CGROUPFS,
    GUARANTEED,
    SYSTEMD,
    UNLIMITED,
    Kind,
    classify,
    detect_driver,
    parse_bytes,
    parse_tree,
    pod_dir,
    qos_dir,
)

UID = "0b5d1f2e-7c3a-4e8b-9d6f-1a2b3c4d5e6f"
CID = "c0ffee" * 10 + "abcd"


@pytest.mark.parametrize(("rel", "driver", "kind", "qos", "uid", "cid"), [
    ("", SYSTEMD, Kind.ROOT, GUARANTEED, None, None),
    ("kubepods-burstable.slice", SYSTEMD, Kind.QOS, BURSTABLE, None, None),
    ("kubepods-besteffort.slice", SYSTEMD, Kind.QOS, BESTEFFORT, None, None),
    (f"kubepods-pod{UID.replace('-', '_')}.slice", SYSTEMD, Kind.POD, GUARANTEED, UID, None),
    (f"kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope",
     SYSTEMD, Kind.CONTAINER, BURSTABLE, UID, CID),
    (f"kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice/crio-{CID}.scope",
     SYSTEMD, Kind.CONTAINER, BESTEFFORT, UID, CID),
    (f"kubepods-pod{UID.replace('-', '_')}.slice/crio-conmon-{CID}.scope", SYSTEMD, Kind.OTHER, GUARANTEED, UID, None),
    ("burstable", CGROUPFS, Kind.QOS, BURSTABLE, None, None),
    (f"pod{UID}", CGROUPFS, Kind.POD, GUARANTEED, UID, None),
    (f"burstable/pod{UID}/{CID}", CGROUPFS, Kind.CONTAINER, BURSTABLE, UID, CID),
    (f"besteffort/pod{UID}/crio-{CID}", CGROUPFS, Kind.CONTAINER, BESTEFFORT, UID, CID),
    ("kubepods-burstable.slice/kubepods-besteffort-podx.slice", SYSTEMD, Kind.OTHER, BURSTABLE, None, None),
    ("something.slice", SYSTEMD, Kind.OTHER, None, None, None),
])
def test_classify(rel, driver, kind, qos, uid, cid) -> None:
    identity = classify(rel, driver)
    assert (identity.kind, identity.qos, identity.pod_uid, identity.container_id) == (kind, qos, uid, cid)


@given(uid=st.uuids().map(str), driver=st.sampled_from([SYSTEMD, CGROUPFS]),
       qos=st.sampled_from([GUARANTEED, BURSTABLE, BESTEFFORT]))
def test_pod_dir_round_trips(uid, driver, qos) -> None:
    identity = classify(pod_dir(driver, qos, uid), driver)
    assert (identity.kind, identity.qos, identity.pod_uid) == (Kind.POD, qos, uid)
    if qos != GUARANTEED:
        assert classify(qos_dir(driver, qos), driver).kind is Kind.QOS


@pytest.mark.parametrize(("text", "value"), [
    ("0\n", 0), ("104857600\n", 104857600), ("max\n", UNLIMITED), ("", None), (None, None), ("-1", None),
    ("12abc", None), ("1" * 30, None), ("١٢", None), (" 42 ", 42),
])
def test_parse_bytes(text, value) -> None:
    assert parse_bytes(text) == value


@given(st.text(max_size=40))
def test_parse_bytes_never_raises(text) -> None:
    value = parse_bytes(text)
    assert value is None or 0 <= value <= UNLIMITED


def test_detect_driver() -> None:
    assert detect_driver({"kubepods.slice", "system.slice"}) == SYSTEMD
    assert detect_driver({"kubepods", "system"}) == CGROUPFS
    assert detect_driver({"init.scope"}) is None


def test_parse_tree_drops_orphans_and_reports_garbage() -> None:
    pod = pod_dir(SYSTEMD, BURSTABLE, str(uuid.uuid4()))
    snapshot = {
        "": {"memory.min": "0\n"},
        "kubepods-burstable.slice": {"memory.min": "garbage\n"},
        pod: {"memory.min": None},  # unreadable
        "kubepods-besteffort.slice/kubepods-besteffort-podx.slice/c": {"memory.min": "1\n"},  # parent vanished
    }
    tree = parse_tree(snapshot, SYSTEMD)
    assert set(tree.nodes) == {"", "kubepods-burstable.slice", pod}
    assert tree.nodes["kubepods-burstable.slice"].min is None
    assert len(tree.problems) == 2 and "garbage" in tree.problems[0] + tree.problems[1]
    assert tree.order[0] == "" and tree.order.index("kubepods-burstable.slice") < tree.order.index(pod)


def test_parse_tree_without_root_is_reported() -> None:
    tree = parse_tree({}, CGROUPFS)
    assert tree.root.min is None and tree.problems == ["kubepods: missing"]
