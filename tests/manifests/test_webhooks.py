"""Webhook configurations: architecture §7.2 settings, which resources and namespaces they see, and their
object selectors."""

from __future__ import annotations

from typing import Any

import pytest

from qosgate.core import annotations
from tests.manifests.helpers import NAMESPACE, WEBHOOK, Obj, kinds, one, selector_matches

EXCLUDED = {"kube-system", NAMESPACE}
PODS = ("", "pods")
WORKLOADS = {("apps", r) for r in ("deployments", "statefulsets", "daemonsets", "replicasets")} | {("batch", "jobs")}
# Webhook name -> (path, the (group, resource) pairs and operations it must match, failurePolicy).
EXPECTED = {
    "mutate-pods.qosgate.io": ("/mutate", {PODS}, {"CREATE", "UPDATE"}, "Ignore"),
    "validate-pods.qosgate.io": ("/validate", {PODS}, {"CREATE", "UPDATE"}, "Fail"),
    "validate-workloads.qosgate.io": ("/validate", WORKLOADS, {"CREATE", "UPDATE"}, "Fail"),
    "validate-cronjobs.qosgate.io": ("/validate", {("batch", "cronjobs")}, {"CREATE", "UPDATE"}, "Fail"),
    "validate-quota-configmaps.qosgate.io": ("/validate", {("", "configmaps")}, {"CREATE", "UPDATE", "DELETE"}, "Fail"),
    "validate-system-configmaps.qosgate.io": ("/validate", {("", "configmaps")}, {"CREATE", "UPDATE", "DELETE"},
                                              "Fail"),
}
SYSTEM_CONFIGMAPS = {"qosgate-classes", "qosgate-default-quota"}


def webhooks(objects: list[Obj]) -> dict[str, tuple[str, dict[str, Any]]]:
    found = {}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for config in kinds(objects, kind):
            for hook in config["webhooks"]:
                assert hook["name"] not in found, f"duplicate webhook name {hook['name']}"
                found[hook["name"]] = (kind, hook)
    return found


def test_the_expected_webhooks_exist_in_every_install(installs: dict[str, list[Obj]]) -> None:
    for name, objects in installs.items():
        assert set(webhooks(objects)) == set(EXPECTED), name
        assert {k for k, _ in webhooks(objects).values()} == {"MutatingWebhookConfiguration",
                                                               "ValidatingWebhookConfiguration"}
        assert [h["name"] for h in one(objects, "MutatingWebhookConfiguration", "qosgate")["webhooks"]] == [
            "mutate-pods.qosgate.io"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_design_section_6_settings(installs: dict[str, list[Obj]], name: str) -> None:
    path, resources, operations, failure_policy = EXPECTED[name]
    for install, objects in installs.items():
        kind, hook = webhooks(objects)[name]
        label = f"{install}: {name}"
        assert hook["admissionReviewVersions"] == ["v1"], label
        assert hook["sideEffects"] == "NoneOnDryRun", label
        assert 1 <= hook["timeoutSeconds"] <= 3, label
        assert hook["failurePolicy"] == failure_policy, label
        assert hook.get("matchPolicy", "Equivalent") == "Equivalent", label
        if kind == "MutatingWebhookConfiguration":
            assert hook["reinvocationPolicy"] == "IfNeeded", label
        service = hook["clientConfig"]["service"]
        assert service == {"namespace": NAMESPACE, "name": WEBHOOK, "path": path, "port": 443}, label
        assert "url" not in hook["clientConfig"], label
        matched = {(g, r) for rule in hook["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
        assert matched == resources, label
        for rule in hook["rules"]:
            assert set(rule["operations"]) == operations, label
            assert rule["apiVersions"] == ["v1"] and rule["scope"] == "Namespaced", label
            assert "*" not in rule["apiGroups"] + rule["resources"], label


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_namespaces_are_chosen_by_the_immutable_name_label(base: list[Obj], name: str) -> None:
    _, hook = webhooks(base)[name]
    selector = hook["namespaceSelector"]
    assert not selector.get("matchLabels")
    (expression,) = selector["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name"
    if name == "validate-system-configmaps.qosgate.io":
        # The one hook reaching into qosgate-system: only there, and only for two names (below).
        assert (expression["operator"], expression["values"]) == ("In", [NAMESPACE])
    else:
        assert expression["operator"] == "NotIn" and set(expression["values"]) == EXCLUDED
    for namespace in ("default", "tenant-a", "kube-system", NAMESPACE, "kube-public"):
        labels = {"kubernetes.io/metadata.name": namespace}
        expected = namespace == NAMESPACE if expression["operator"] == "In" else namespace not in EXCLUDED
        assert selector_matches(selector, labels) == expected, (name, namespace)


def test_quota_configmaps_are_picked_by_label_existence(base: list[Obj]) -> None:
    _, hook = webhooks(base)["validate-quota-configmaps.qosgate.io"]
    selector = hook["objectSelector"]
    assert selector["matchExpressions"] == [{"key": annotations.QUOTA_LABEL, "operator": "Exists"}]
    assert selector_matches(selector, {annotations.QUOTA_LABEL: "true"})
    assert selector_matches(selector, {annotations.QUOTA_LABEL: "false"})  # relabelling is caught too
    assert not selector_matches(selector, {"app": "x"})
    for name, (_, other) in webhooks(base).items():
        if name != "validate-quota-configmaps.qosgate.io":
            assert not other.get("objectSelector"), name


def test_default_quota_and_catalog_are_what_the_system_hook_guards(base: list[Obj]) -> None:
    in_system = {o["metadata"]["name"] for o in kinds(base, "ConfigMap") if o["metadata"]["namespace"] == NAMESPACE}
    assert in_system == SYSTEM_CONFIGMAPS
    webhook = one(base, "Deployment", WEBHOOK)
    args = webhook["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--catalog-configmap={NAMESPACE}/{annotations.CATALOG_CONFIGMAP}" in args
