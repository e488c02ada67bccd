"""Owned annotations/labels on a new pod must equal compile_pod's computation."""

from __future__ import annotations

from qosgate.core.catalog import load_catalog_yaml
from qosgate.core.compile import compile_pod
from qosgate.webhook.checks.owned import check_owned
from tests.webhook.checks.helpers import gold_pod, mutated, raw_pod

KOORD = load_catalog_yaml("""
backends: [koordinator]
resources:
- name: memory-qos
  classes:
  - {name: gold, memoryMinPercent: 100, koordinatorQoSClass: LSR}
""")


def compiled(pod, catalog=None):
    from qosgate.core.catalog import DEFAULT_CATALOG
    return compile_pod(pod, catalog or DEFAULT_CATALOG)


def test_mutated_pod_passes() -> None:
    pod = gold_pod()
    assert not check_owned(pod, compiled(pod)).denied


def test_a_class_pod_the_mutating_webhook_never_saw_is_refused_as_retryable() -> None:
    pod = raw_pod({"qos-resources.qosgate.io": "memory-qos=gold"})
    finding = check_owned(pod, compiled(pod))
    assert finding.denied and finding.retryable
    assert "that webhook did not run (unreachable or timed out); retry the request" in finding.denials[0]


def test_a_partly_annotated_class_pod_is_refused_as_tampered_not_retryable() -> None:
    pod = gold_pod()
    del pod["metadata"]["annotations"]["memory.min.memory-qos.nri.io/app"]
    finding = check_owned(pod, compiled(pod))
    assert finding.denied and not finding.retryable
    message = finding.denials[0]
    assert "the qosgate mutating webhook was bypassed" in message
    assert "annotation memory.min.memory-qos.nri.io/app is missing (the catalog computes '1073741824')" in message


def test_user_set_backend_annotation_is_refused() -> None:
    pod = gold_pod()
    pod["metadata"]["annotations"]["memory.min.memory-qos.nri.io/app"] = "68719476736"
    pod["metadata"]["annotations"]["qosgate.io/memory-min"] = "1"
    message = check_owned(pod, compiled(pod)).denials[0]
    assert "annotation memory.min.memory-qos.nri.io/app is '68719476736', the catalog computes '1073741824'" in message
    assert "annotation qosgate.io/memory-min is '1'" in message


def test_extra_owned_annotation_is_refused() -> None:
    pod = gold_pod()
    pod["metadata"]["annotations"]["memory.high.memory-qos.nri.io/app"] = "1"
    assert "memory.high.memory-qos.nri.io/app is set, but the catalog computes none" in \
        check_owned(pod, compiled(pod)).denials[0]


def test_classless_pod_with_owned_annotation_is_refused() -> None:
    # A memory-min on a pod without classes would make the extender reserve node memory for it.
    pod = raw_pod({"qosgate.io/memory-min": "1000000000000"})
    assert check_owned(pod, None).denied
    assert not check_owned(raw_pod({"team": "x"}), None).denied


def test_koordinator_label_is_owned_for_pods_with_classes() -> None:
    pod = mutated(raw_pod({"qos-resources.qosgate.io": "memory-qos=gold"}), KOORD)
    assert pod["metadata"]["labels"]["koordinator.sh/qosClass"] == "LSR"
    assert not check_owned(pod, compiled(pod, KOORD)).denied
    pod["metadata"]["labels"]["koordinator.sh/qosClass"] = "LSE"
    assert "label koordinator.sh/qosClass is 'LSE', the catalog computes 'LSR'" in \
        check_owned(pod, compiled(pod, KOORD)).denials[0]
    # Koordinator users label their other pods themselves.
    assert not check_owned(raw_pod(labels={"koordinator.sh/qosClass": "LSE"}), None).denied


def test_long_values_are_shortened() -> None:
    pod = gold_pod()
    pod["metadata"]["annotations"]["qosgate.io/resolved"] = "x" * 500
    message = check_owned(pod, compiled(pod)).denials[0]
    assert "x" * 100 not in message and "…" in message
