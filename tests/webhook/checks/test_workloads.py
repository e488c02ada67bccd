"""Workload templates: unknown classes and classes outside the quota's allow-list; no capacity."""

from __future__ import annotations

import copy

import pytest

from qosgate.core.catalog import DEFAULT_CATALOG
from qosgate.core.quota import load_quota_yaml
from qosgate.webhook.checks.workloads import check_workload
from tests.webhook.checks.helpers import deployment

QUOTAS = [load_quota_yaml("pod: [{name: memory-qos, classes: [{name: silver, capacity: 1}, {name: bronze}]}]",
                          "configmap team-a/q")]
CARRIER = "qos-resources.qosgate.io"


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"])
def test_quota_allow_list_applies_to_templates(kind: str) -> None:
    finding = check_workload(deployment({CARRIER: "memory-qos=gold"}, kind=kind), None, "team-a",
                             DEFAULT_CATALOG, QUOTAS)
    path = "spec.jobTemplate.spec.template" if kind == "CronJob" else "spec.template"
    assert finding.denials == (f"{kind} team-a/web {path}: namespace team-a: memory-qos class gold not allowed "
                               "(allowed: silver, bronze)",)


def test_capacity_is_not_charged() -> None:
    # capacity 1 of silver: any number of workloads may ask for it; their pods are counted.
    for _ in range(3):
        assert not check_workload(deployment({CARRIER: "memory-qos=silver"}), None, "team-a", DEFAULT_CATALOG,
                                  QUOTAS).denied


def test_unknown_class_in_template() -> None:
    finding = check_workload(deployment({CARRIER: "memory-qos=platinum"}), None, "team-a", DEFAULT_CATALOG, [])
    assert finding.denials == ("Deployment team-a/web spec.template: pod qosResources (or annotation "
                               "qos-resources.qosgate.io): unknown class 'platinum' for memory-qos "
                               "(allowed: gold, silver, bronze)",)


def test_no_quota_and_no_classes_pass() -> None:
    assert not check_workload(deployment({CARRIER: "memory-qos=gold"}), None, "team-a", DEFAULT_CATALOG, []).denied
    plain = deployment({})
    plain["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"memory": "garbage"}}
    assert not check_workload(plain, None, "team-a", DEFAULT_CATALOG, QUOTAS).denied


def test_unchanged_templates_are_not_rejudged_on_update() -> None:
    old = deployment({CARRIER: "memory-qos=gold"})
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 5
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    assert not check_workload(new, old, "team-a", DEFAULT_CATALOG, QUOTAS).denied
    new["spec"]["template"]["metadata"]["annotations"][CARRIER] = "memory-qos=gold,"
    assert check_workload(new, old, "team-a", DEFAULT_CATALOG, QUOTAS).denied


def test_warn_mode_quota_warns() -> None:
    warn = [load_quota_yaml("enforcement: warn\npod: []", "q")]
    finding = check_workload(deployment({CARRIER: "memory-qos=gold"}), None, "team-a", DEFAULT_CATALOG, warn)
    assert not finding.denied and "not allowed (allowed: none)" in finding.warnings[0]
