from __future__ import annotations

from qosgate.core.nodefit import protectable
from qosgate.core.records import node_record_from_raw, pod_record_from_raw
from tests.kube.podfactory import make_node, make_pod


def test_annotated_pod_record() -> None:
    pod = make_pod("web-1", "team", uid="u1", node="n1", pod_class="gold", container_class="silver")
    record = pod_record_from_raw(pod, "annotated")
    assert (record.uid, record.namespace, record.name, record.node_name) == ("u1", "team", "web-1", "n1")
    assert record.memory_min == 256 * 2**20
    assert record.pod_classes == (("memory-qos", "gold"),)
    assert record.container_classes == (("memory-qos", "silver"),)
    assert record.classes == {("memory-qos", "gold"), ("memory-qos", "silver")}
    assert record.active and not record.terminating and record.problems == ()
    assert record.scheduler_name == "default-scheduler"


def test_kubelet_accounting_counts_requests() -> None:
    record = pod_record_from_raw(make_pod("a", uid="u", memory_min=None), "kubelet")
    assert record.memory_min == (256 + 64) * 2**20


def test_memory_min_quantity_forms() -> None:
    assert pod_record_from_raw(make_pod("a", uid="u", memory_min="1Gi")).memory_min == 2**30
    assert pod_record_from_raw(make_pod("a", uid="u", memory_min=None)).memory_min == 0


def test_bad_memory_min_is_zero_with_a_problem() -> None:
    record = pod_record_from_raw(make_pod("a", uid="u", memory_min="lots"))
    assert record.memory_min == 0
    assert "qosgate.io/memory-min" in record.problems[0]


def test_bad_requests_in_kubelet_mode_is_a_problem_not_a_crash() -> None:
    pod = make_pod("a", uid="u")
    pod["spec"]["containers"][0]["resources"]["requests"]["memory"] = "-1Gi"
    record = pod_record_from_raw(pod, "kubelet")
    assert record.memory_min == 0 and record.problems
    pod["spec"]["containers"] = ["not a container"]
    assert pod_record_from_raw(pod, "kubelet").problems


def test_defaults_terminal_and_terminating() -> None:
    bare = pod_record_from_raw({"metadata": {"name": "x", "namespace": "ns", "uid": "u"}})
    assert bare.phase == "Pending" and bare.node_name == "" and bare.active
    assert bare.classes == frozenset() and bare.memory_min == 0
    assert not pod_record_from_raw(make_pod("a", uid="u", phase="Succeeded")).active
    assert not pod_record_from_raw(make_pod("a", uid="u", phase="Failed")).active
    terminating = pod_record_from_raw(make_pod("a", uid="u", terminating=True))
    assert terminating.terminating and terminating.active


def test_invalid_carrier_counts_no_classes() -> None:
    pod = make_pod("a", uid="u")
    pod["metadata"]["annotations"]["qos-resources.qosgate.io"] = "not a pair"
    assert pod_record_from_raw(pod).classes == frozenset()


def test_native_fields_are_read() -> None:
    pod = make_pod("a", uid="u", pod_class=None)
    pod["spec"]["qosResources"] = [{"name": "memory-qos", "class": "bronze"}]
    assert pod_record_from_raw(pod).pod_classes == (("memory-qos", "bronze"),)


def test_records_share_repeated_values() -> None:
    a = pod_record_from_raw(make_pod("a-1", "team", uid="u1", node="node-7", container_class="silver"))
    b = pod_record_from_raw(make_pod("a-2", "team", uid="u2", node="node-7", container_class="silver"))
    assert a.namespace is b.namespace and a.node_name is b.node_name
    assert a.pod_classes is b.pod_classes and a.classes is b.classes


def test_uid_falls_back_to_namespaced_name() -> None:
    assert pod_record_from_raw(make_pod("a", "ns")).uid == "ns/a"


def test_node_record() -> None:
    node = make_node("n1", "10Gi", {"qosgate.io/protectable-memory": "8Gi",
                                    "qosgate.io/qos-classes": "memory-qos=gold:3,silver"}, unschedulable=True)
    record = node_record_from_raw(node)
    assert record.name == "n1" and record.allocatable_memory == 10 * 2**30
    assert record.protectable_override == 8 * 2**30 and protectable(record, 50) == 8 * 2**30
    assert record.offered_classes == {"memory-qos": {"gold": 3, "silver": 0}}
    assert record.unschedulable and record.problems == ()
    hash(record)


def test_node_without_annotations_offers_everything() -> None:
    record = node_record_from_raw(make_node("n1", "10Gi"))
    assert record.offered_classes is None and record.protectable_override is None
    assert protectable(record, 90) == 9 * 2**30


def test_bad_node_annotations_are_problems() -> None:
    node = make_node("n1", "lots", {"qosgate.io/protectable-memory": "x", "qosgate.io/qos-classes": "memory-qos"})
    record = node_record_from_raw(node)
    assert record.allocatable_memory == 0 and record.protectable_override is None
    # Fail closed: a node whose class list cannot be read offers nothing.
    assert record.offered_classes == {}
    assert len(record.problems) == 3
