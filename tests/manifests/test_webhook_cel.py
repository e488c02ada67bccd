"""What the webhooks' CEL matchConditions let through, evaluated by cel-python as the API server would.

A matchCondition that errors rejects the request (failurePolicy Fail) or silently skips the webhook
(Ignore), so every case here also checks that evaluation yields a bool, never an error.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest

from qosgate.core import annotations
from tests.manifests.helpers import NAMESPACE, Obj
from tests.manifests.test_webhooks import SYSTEM_CONFIGMAPS, webhooks

celpy = pytest.importorskip("celpy", reason="cel-python (test extra) evaluates the CEL matchConditions")

@functools.cache
def compiled(expression: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression))


def conditions(base: list[Obj], name: str) -> list[Any]:
    _, hook = webhooks(base)[name]
    return [compiled(c["expression"]) for c in hook["matchConditions"]]


def called(base: list[Obj], name: str, operation: str, obj: Obj | None, old: Obj | None = None,
           request_name: str = "") -> bool:
    """The API server's rule: the webhook is called only when every matchCondition is true.
    An evaluation error would reject the request (Fail) or skip the webhook (Ignore): never acceptable."""
    activation = {
        "request": celpy.json_to_cel({"operation": operation, "name": request_name, "namespace": "tenant-a"}),
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(old),
    }
    results = [program.evaluate(activation) for program in conditions(base, name)]
    assert all(isinstance(r, celpy.celtypes.BoolType) for r in results), results
    return all(results)


def pod(annotation_map: dict[str, str] | None) -> Obj:
    metadata: dict[str, Any] = {"name": "p", "namespace": "tenant-a"}
    if annotation_map is not None:
        metadata["annotations"] = annotation_map
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}}


SELECTED_KEYS = [
    annotations.CARRIER_POD,
    annotations.CARRIER_CONTAINER_PREFIX + "app",
    annotations.MEMORY_MIN,
    annotations.RESOLVED,
    annotations.NRI_CLASS_PREFIX + "app",
    "class.memory-qos.nri.io",  # the plugin's pod-level form: forged, must be seen
    annotations.NRI_MEMORY_MIN_PREFIX + "app",
    annotations.NRI_MEMORY_HIGH_PREFIX + "app",
    "memory.swap.max.memory-qos.nri.io/app",
    annotations.KOORD_MEMORY_QOS,
]
IGNORED_KEYS = ["kubectl.kubernetes.io/last-applied-configuration", "prometheus.io/scrape", "qosgate.io",
                "example.com/qos-resources.qosgate.io", "koordinator.sh/memoryQOSx", "qos-resources.qosgate.iox"]
POD_HOOKS = ["mutate-pods.qosgate.io", "validate-pods.qosgate.io"]


@pytest.mark.parametrize("hook", POD_HOOKS)
@pytest.mark.parametrize("key", SELECTED_KEYS + IGNORED_KEYS)
def test_pod_conditions_select_exactly_the_keys_qosgate_reads_or_owns(base: list[Obj], hook: str, key: str) -> None:
    expected = annotations.is_carrier_annotation(key) or annotations.is_owned_annotation(key)
    assert expected == (key in SELECTED_KEYS)  # the key lists above agree with qosgate.core.annotations
    other = {"team": "a"}
    assert called(base, hook, "CREATE", pod({**other, key: "x"})) == expected
    assert called(base, hook, "UPDATE", pod({**other, key: "x"}), pod(other)) == expected
    assert called(base, hook, "UPDATE", pod(other), pod({**other, key: "x"})) == expected  # removal is seen


@pytest.mark.parametrize("hook", POD_HOOKS)
def test_pod_conditions_without_annotations_never_error(base: list[Obj], hook: str) -> None:
    assert not called(base, hook, "CREATE", pod(None))
    assert not called(base, hook, "CREATE", pod({}))
    assert not called(base, hook, "UPDATE", pod(None), pod(None))
    assert called(base, hook, "UPDATE", pod(None), pod({annotations.CARRIER_POD: "memory-qos=gold"}))
    # DELETE carries no object; the guards keep the expression total should DELETE ever be added.
    assert called(base, hook, "DELETE", None, pod({annotations.CARRIER_POD: "memory-qos=gold"}))
    assert not called(base, hook, "DELETE", None, pod(None))


def workload(kind: str, template_annotations: dict[str, str] | None) -> Obj:
    template: dict[str, Any] = {"metadata": {"labels": {"app": "a"}},
                                "spec": {"containers": [{"name": "app", "image": "busybox"}]}}
    if template_annotations is not None:
        template["metadata"]["annotations"] = template_annotations
    if kind == "CronJob":
        spec: dict[str, Any] = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
        api_version = "batch/v1"
    else:
        spec = {"template": template}
        api_version = "batch/v1" if kind == "Job" else "apps/v1"
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": "w", "namespace": "tenant-a", "annotations": {annotations.CARRIER_POD: "x"}},
            "spec": spec}


@pytest.mark.parametrize(("hook", "kind"), [
    ("validate-workloads.qosgate.io", "Deployment"), ("validate-workloads.qosgate.io", "StatefulSet"),
    ("validate-workloads.qosgate.io", "DaemonSet"), ("validate-workloads.qosgate.io", "ReplicaSet"),
    ("validate-workloads.qosgate.io", "Job"), ("validate-cronjobs.qosgate.io", "CronJob"),
])
def test_workload_conditions_look_at_the_pod_template(base: list[Obj], hook: str, kind: str) -> None:
    carrier = {annotations.CARRIER_CONTAINER_PREFIX + "app": "memory-qos=silver"}
    forged = {annotations.NRI_MEMORY_MIN_PREFIX + "app": "1"}
    assert called(base, hook, "CREATE", workload(kind, carrier))
    assert called(base, hook, "CREATE", workload(kind, forged))
    # The workload's own metadata carries the carrier key here: it is not what pods inherit.
    assert not called(base, hook, "CREATE", workload(kind, None))
    assert not called(base, hook, "CREATE", workload(kind, {"team": "a"}))
    assert called(base, hook, "UPDATE", workload(kind, None), workload(kind, carrier))
    assert not called(base, hook, "UPDATE", workload(kind, {}), workload(kind, None))


def test_workload_hooks_do_not_reach_for_the_other_template_path(base: list[Obj]) -> None:
    carrier = {annotations.CARRIER_POD: "memory-qos=gold"}
    cronjob, deployment = workload("CronJob", carrier), workload("Deployment", carrier)
    assert not called(base, "validate-workloads.qosgate.io", "CREATE", cronjob)
    assert not called(base, "validate-cronjobs.qosgate.io", "CREATE", deployment)


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE", "DELETE"])
def test_system_hook_guards_exactly_the_catalog_and_the_default_quota(base: list[Obj], operation: str) -> None:
    hook = "validate-system-configmaps.qosgate.io"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n", "namespace": NAMESPACE}}
    obj = None if operation == "DELETE" else cm
    old = None if operation == "CREATE" else copy.deepcopy(cm)
    for name in SYSTEM_CONFIGMAPS:
        assert called(base, hook, operation, obj, old, request_name=name)
    for name in ("qosgate-quota-tenant-a", "qosgate-classes-backup", "kube-root-ca.crt", ""):
        assert not called(base, hook, operation, obj, old, request_name=name)


@pytest.mark.parametrize(("hook", "kind"), [("validate-workloads.qosgate.io", "Deployment"),
                                            ("validate-cronjobs.qosgate.io", "CronJob")])
@pytest.mark.parametrize("key", SELECTED_KEYS + IGNORED_KEYS)
def test_every_copy_of_the_key_test_agrees(base: list[Obj], hook: str, kind: str, key: str) -> None:
    """The key test is written out once per object path (CEL in matchConditions has no variables)."""
    selected = key in SELECTED_KEYS
    assert called(base, hook, "CREATE", workload(kind, {key: "x"})) == selected
    assert called(base, hook, "UPDATE", workload(kind, {}), workload(kind, {key: "x"})) == selected
