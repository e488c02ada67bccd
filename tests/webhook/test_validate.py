"""The validator chains the checks and the quota engine; responses never carry a patch."""

from __future__ import annotations

import copy

import pytest

from qosgate.core.catalog import CatalogHolder
from qosgate.core.quota import load_quota_yaml
from qosgate.kube.store import PodStore
from qosgate.webhook.quota.engine import QuotaEngine
from qosgate.webhook.quota.source import StaticQuotas
from qosgate.webhook.validate import ValidatorSettings, build_validator
from tests.webhook.checks.helpers import (
    configmap,
    deployment,
    gold_pod,
    quota_configmap,
    raw_pod,
    request,
)

QUOTA = load_quota_yaml("pod: [{name: memory-qos, classes: [{name: gold, capacity: 2}, {name: bronze}]}]",
                        "configmap team-a/q")
DRYRUN_QUOTA = load_quota_yaml("enforcement: dryrun\npod: []", "configmap team-b/q")


@pytest.fixture
def validator():
    store = PodStore()
    store.replace([], "1")
    engine = QuotaEngine(store, StaticQuotas({"team-a": [QUOTA], "team-b": [DRYRUN_QUOTA]}))
    return build_validator(CatalogHolder(), engine, ValidatorSettings.of(admin_groups=["platform"]))


def test_pod_with_classes_is_charged_and_capped(validator) -> None:
    assert validator(request(gold_pod())).allowed
    assert validator(request(gold_pod())).allowed
    response = validator(request(gold_pod()))
    assert not response.allowed and response.code == 403 and response.patch == ()
    assert response.message == "qosgate: namespace team-a: memory-qos class gold at capacity 2/2"


def test_dry_run_consumes_nothing(validator) -> None:
    for _ in range(5):
        assert validator(request(gold_pod(), dry_run=True)).allowed
    assert validator(request(gold_pod())).allowed and validator(request(gold_pod())).allowed


def test_class_outside_allow_list(validator) -> None:
    response = validator(request(gold_pod("silver")))
    assert response.message == "qosgate: namespace team-a: memory-qos class silver not allowed (allowed: gold, bronze)"


def test_tampered_pod_is_refused_before_quota(validator) -> None:
    pod = gold_pod()
    pod["metadata"]["annotations"]["memory.min.memory-qos.nri.io/app"] = str(64 * 2**30)
    response = validator(request(pod))
    assert not response.allowed and "disagree with the catalog" in response.message
    # The refused pod took no capacity.
    assert validator(request(gold_pod())).allowed and validator(request(gold_pod())).allowed


def test_bypassed_mutation_is_refused_with_a_retryable_503(validator) -> None:
    response = validator(request(raw_pod({"qos-resources.qosgate.io": "memory-qos=gold"})))
    assert not response.allowed and "mutating webhook writes" in response.message
    assert response.code == 503


def test_unknown_class(validator) -> None:
    response = validator(request(raw_pod({"qos-resources.qosgate.io": "memory-qos=platinum"})))
    assert "unknown class 'platinum' for memory-qos (allowed: gold, silver, bronze)" in response.message


def test_classless_pods_pass_untouched(validator) -> None:
    for _ in range(10):
        response = validator(request(raw_pod()))
        assert response.allowed and response.patch == () and response.warnings == []


def test_dryrun_enforcement_audits(validator) -> None:
    response = validator(request(gold_pod(namespace="team-b")))
    assert response.allowed
    assert response.audit_annotations == {
        "quota-dryrun": "namespace team-b: memory-qos class gold not allowed (allowed: none)"}


def test_update_changing_class_is_refused(validator) -> None:
    old = gold_pod()
    new = copy.deepcopy(old)
    new["metadata"]["annotations"]["qos-resources.qosgate.io"] = "memory-qos=bronze"
    response = validator(request(new, operation="UPDATE", old=old))
    assert not response.allowed and "immutable" in response.message
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"x": "y"}
    assert validator(request(new, operation="UPDATE", old=old)).allowed


def test_update_is_not_rejudged_against_a_changed_catalog() -> None:
    holder = CatalogHolder()
    v = build_validator(holder, None, None)
    old = gold_pod()
    holder.current = holder.current.__class__(resources={}, backends=("nri-memory-qos",))
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"rollout": "2"}
    assert v(request(new, operation="UPDATE", old=old)).allowed


def test_delete_and_subresources_pass(validator) -> None:
    assert validator(request(None, operation="DELETE", old=gold_pod())).allowed
    binding = request(gold_pod(), sub_resource="binding")
    assert validator(binding).allowed


def test_quota_configmap_guard_and_content(validator) -> None:
    cm = quota_configmap("pod: [{name: memory-qos, classes: [{name: gold, capacity: 100}]}]")
    response = validator(request(cm, kind="ConfigMap", operation="UPDATE", old=cm))
    assert not response.allowed and "only qosgate admins may change the quota ConfigMap team-a/qos-quota" in \
        response.message
    assert validator(request(cm, kind="ConfigMap", groups=("platform",))).allowed
    bad = quota_configmap("pod: [{name: memory-qos, classes: [{name: gold, capacity: lots}]}]")
    response = validator(request(bad, kind="ConfigMap", groups=("platform",)))
    assert not response.allowed and "pod[0].classes[0].capacity" in response.message


def test_tenant_denied_and_invalid_reported_together(validator) -> None:
    bad = quota_configmap("pod: 3")
    response = validator(request(bad, kind="ConfigMap"))
    assert "only qosgate admins" in response.message and "invalid quota" in response.message


def test_plain_configmap_passes(validator) -> None:
    assert validator(request(configmap("settings"), kind="ConfigMap")).allowed


def test_workloads(validator) -> None:
    allowed = deployment({"qos-resources.qosgate.io": "memory-qos=gold"})
    for _ in range(5):  # capacity 2, but workloads are never charged
        assert validator(request(allowed, kind="Deployment", group="apps")).allowed
    refused = deployment({"qos-resources.qosgate.io": "memory-qos=silver"}, kind="CronJob")
    response = validator(request(refused, kind="CronJob", group="batch"))
    assert not response.allowed and "memory-qos class silver not allowed" in response.message
    # A kind of the same name in another group is not ours.
    assert validator(request(refused, kind="CronJob", group="example.com")).allowed


def test_without_engine_no_quota_is_enforced() -> None:
    v = build_validator(CatalogHolder())
    assert all(v(request(gold_pod())).allowed for _ in range(5))
    assert not v.blocking
    assert not v(request(raw_pod({"qos-resources.qosgate.io": "memory-qos=platinum"}))).allowed


def test_quota_unavailable_is_a_retryable_503() -> None:
    engine = QuotaEngine(PodStore(), StaticQuotas({"*": [QUOTA]}))  # the pod cache never synced
    v = build_validator(CatalogHolder(), engine)
    response = v(request(gold_pod()))
    assert not response.allowed and response.code == 503 and response.reason == "ServiceUnavailable"
    assert response.message.startswith("qosgate: quota cannot be checked right now")
    assert v(request(raw_pod())).allowed  # pods without classes are never affected
