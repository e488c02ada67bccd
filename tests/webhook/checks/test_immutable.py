"""On UPDATE, classes and everything rendered from them are immutable relative to oldObject."""

from __future__ import annotations

import copy

from qosgate.webhook.checks.immutable import check_immutable
from tests.webhook.checks.helpers import gold_pod, raw_pod


def test_unrelated_changes_pass() -> None:
    old = gold_pod()
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"app": "web", "rollout": "2"}
    new["metadata"]["annotations"]["team"] = "b"
    new["metadata"]["finalizers"] = ["x"]
    assert not check_immutable(new, old).denied
    assert not check_immutable(new, None).denied


def test_class_change_is_refused() -> None:
    old = gold_pod()
    new = copy.deepcopy(old)
    new["metadata"]["annotations"]["qos-resources.qosgate.io"] = "memory-qos=silver"
    message = check_immutable(new, old).denials[0]
    assert message.startswith("QoS classes of a pod are immutable")
    assert "annotation qos-resources.qosgate.io: 'memory-qos=gold' → 'memory-qos=silver'" in message


def test_adding_or_removing_classes_is_refused() -> None:
    old = raw_pod()
    new = copy.deepcopy(old)
    new["metadata"]["annotations"] = {"qos-resources.qosgate.io/app": "memory-qos=gold"}
    assert "qos-resources.qosgate.io/app: absent → 'memory-qos=gold'" in check_immutable(new, old).denials[0]
    assert check_immutable(old, new).denied


def test_owned_annotation_edit_is_refused() -> None:
    old = gold_pod()
    new = copy.deepcopy(old)
    new["metadata"]["annotations"]["memory.min.memory-qos.nri.io/app"] = "1"
    del new["metadata"]["annotations"]["qosgate.io/memory-min"]
    message = check_immutable(new, old).denials[0]
    assert "memory.min.memory-qos.nri.io/app: '1073741824' → '1'" in message
    assert "qosgate.io/memory-min: '1073741824' → absent" in message


def test_native_fields_are_immutable() -> None:
    old = raw_pod()
    old["spec"]["containers"][0]["resources"]["qosResources"] = [{"name": "memory-qos", "class": "gold"}]
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["resources"]["qosResources"][0]["class"] = "bronze"
    assert "field spec.containers[app].resources.qosResources" in check_immutable(new, old).denials[0]


def test_koordinator_label_owned_only_for_pods_with_classes() -> None:
    old = gold_pod()
    old["metadata"]["labels"] = {"koordinator.sh/qosClass": "LSR"}
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["koordinator.sh/qosClass"] = "LSE"
    assert "label koordinator.sh/qosClass: 'LSR' → 'LSE'" in check_immutable(new, old).denials[0]
    plain_old = raw_pod(labels={"koordinator.sh/qosClass": "LS"})
    plain_new = copy.deepcopy(plain_old)
    plain_new["metadata"]["labels"]["koordinator.sh/qosClass"] = "BE"
    assert not check_immutable(plain_new, plain_old).denied
