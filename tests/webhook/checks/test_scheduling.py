"""Class pods reach the extender: the mutating webhook routes them to the catalog's scheduler, and the
validating webhook refuses a preset node or another scheduler."""

from __future__ import annotations

from typing import Any

import jsonpatch

from qosgate.core.catalog import DEFAULT_CATALOG, load_catalog_yaml
from qosgate.webhook.checks.scheduling import check_scheduling
from qosgate.webhook.mutate import mutate_pod
from tests.webhook.checks.helpers import container, raw_pod

ROUTED = load_catalog_yaml("""\
scheduling: {schedulerName: qosgate-scheduler, routeKubeletProtected: true}
resources:
- name: memory-qos
  classes:
  - {name: gold, memoryMinPercent: 100}
""")
CARRIER = {"qos-resources.qosgate.io": "memory-qos=gold"}


def with_scheduler(pod: dict[str, Any], name: str | None = "default-scheduler") -> dict[str, Any]:
    if name is not None:
        pod["spec"]["schedulerName"] = name  # what kube-apiserver defaults before admission
    return pod


def guaranteed(pod: dict[str, Any]) -> dict[str, Any]:
    for c in pod["spec"]["containers"]:
        c["resources"] = {"requests": {"memory": "1Gi", "cpu": "1"}, "limits": {"memory": "1Gi", "cpu": "1"}}
    return pod


def mutated(pod: dict[str, Any], catalog: Any = ROUTED) -> dict[str, Any]:
    response = mutate_pod(pod, catalog)
    assert response.allowed, response.message
    return jsonpatch.apply_patch(pod, list(response.patch))


def test_class_pods_are_routed_to_the_catalogs_scheduler() -> None:
    assert mutated(with_scheduler(raw_pod(CARRIER)))["spec"]["schedulerName"] == "qosgate-scheduler"
    assert mutated(with_scheduler(raw_pod(CARRIER), None))["spec"]["schedulerName"] == "qosgate-scheduler"


def test_kubelet_protected_pods_are_routed_too_and_others_never_wait_on_the_extender() -> None:
    plain = with_scheduler(guaranteed(raw_pod()))
    assert mutated(plain)["spec"]["schedulerName"] == "qosgate-scheduler"
    burstable = with_scheduler(raw_pod(containers=[container("app", "1Gi", "2Gi")]))
    assert mutated(burstable)["spec"]["schedulerName"] == "default-scheduler"


def test_routing_is_off_by_default_and_an_explicit_scheduler_is_kept() -> None:
    assert mutated(with_scheduler(raw_pod(CARRIER)), DEFAULT_CATALOG)["spec"]["schedulerName"] == "default-scheduler"
    chosen = mutated(with_scheduler(raw_pod(CARRIER), "volcano"))
    assert chosen["spec"]["schedulerName"] == "volcano"
    assert "must be scheduled by 'qosgate-scheduler'" in check_scheduling(chosen, ROUTED).denials[0]


def test_routing_is_idempotent() -> None:
    once = mutated(with_scheduler(raw_pod(CARRIER)))
    assert [op for op in mutate_pod(once, ROUTED).patch if op["path"] == "/spec/schedulerName"] == []


def test_a_preset_node_is_refused_for_class_pods() -> None:
    pod = raw_pod(CARRIER)
    pod["spec"]["nodeName"] = "node-1"
    assert "spec.nodeName is preset" in check_scheduling(pod, DEFAULT_CATALOG).denials[0]
    assert not check_scheduling(raw_pod(CARRIER), DEFAULT_CATALOG).denied
