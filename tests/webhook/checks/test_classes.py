"""Unknown resources and classes are refused with the catalog's own messages."""

from __future__ import annotations

from qosgate.core.catalog import DEFAULT_CATALOG
from qosgate.webhook.checks.classes import check_classes
from tests.webhook.checks.helpers import container, raw_pod


def test_classless_pod_is_not_compiled() -> None:
    # A malformed quantity on a pod without classes is kube's business, never a qosgate refusal.
    pod = raw_pod(containers=[container(request="lots")])
    finding, compiled = check_classes(pod, DEFAULT_CATALOG)
    assert not finding.denied and compiled is None


def test_known_class_compiles() -> None:
    finding, compiled = check_classes(raw_pod({"qos-resources.qosgate.io": "memory-qos=gold"}), DEFAULT_CATALOG)
    assert not finding.denied
    assert compiled is not None and compiled.memory_min == 2**30


def test_unknown_class_lists_allowed_ones() -> None:
    finding, compiled = check_classes(raw_pod({"qos-resources.qosgate.io": "memory-qos=platinum"}), DEFAULT_CATALOG)
    assert compiled is None
    assert finding.denials == ("pod qosResources (or annotation qos-resources.qosgate.io): unknown class "
                               "'platinum' for memory-qos (allowed: gold, silver, bronze)",)


def test_unknown_resource_and_bad_container_key_all_reported() -> None:
    pod = raw_pod({"qos-resources.qosgate.io": "example.com/io=fast",
                   "qos-resources.qosgate.io/ghost": "memory-qos=gold"})
    finding, _ = check_classes(pod, DEFAULT_CATALOG)
    assert len(finding.denials) == 1  # extract_requests stops at the carrier errors, naming each
    assert "names container 'ghost'" in finding.denials[0]
    finding, _ = check_classes(raw_pod({"qos-resources.qosgate.io": "example.com/io=fast"}), DEFAULT_CATALOG)
    assert "unknown QoS resource 'example.com/io' (known: memory-qos)" in finding.denials[0]


def test_malformed_carrier() -> None:
    finding, _ = check_classes(raw_pod({"qos-resources.qosgate.io": "gold"}), DEFAULT_CATALOG)
    assert finding.denials == ("metadata.annotations[qos-resources.qosgate.io]: 'gold' is not of the form "
                               "name=class",)
