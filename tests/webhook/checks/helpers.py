"""Objects for the validating-webhook tests: pods as the mutating webhook leaves them, reviews, ConfigMaps."""

from __future__ import annotations

import copy
import itertools
import uuid
from typing import Any

import jsonpatch

from qosgate.core.catalog import DEFAULT_CATALOG, Catalog
from qosgate.webhook.admission import AdmissionRequest
from qosgate.webhook.mutate import mutate_pod

GI = 2**30
_counter = itertools.count()


def container(name: str = "app", request: str | None = "1Gi", limit: str | None = "2Gi") -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if request:
        resources["requests"] = {"memory": request}
    if limit:
        resources["limits"] = {"memory": limit}
    return {"name": name, "image": "nginx", "resources": resources}


def raw_pod(annotations: dict[str, str] | None = None, *, name: str | None = None, namespace: str = "team-a",
            containers: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None,
            uid: str | None = None) -> dict[str, Any]:
    """A pod as its author wrote it (before the mutating webhook)."""
    metadata: dict[str, Any] = {"name": name or f"web-{next(_counter)}", "namespace": namespace,
                                "uid": uid or str(uuid.uuid4())}
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    if labels is not None:
        metadata["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": containers or [container()]}}


def mutated(pod: dict[str, Any], catalog: Catalog = DEFAULT_CATALOG) -> dict[str, Any]:
    """The pod after the mutating webhook's patch, applied with a real JSON-patch library."""
    response = mutate_pod(pod, catalog)
    assert response.allowed, response.message
    return jsonpatch.apply_patch(copy.deepcopy(pod), list(response.patch))


def gold_pod(klass: str = "gold", **kwargs: Any) -> dict[str, Any]:
    return mutated(raw_pod({"qos-resources.qosgate.io": f"memory-qos={klass}"}, **kwargs))


def request(obj: dict[str, Any] | None, *, operation: str = "CREATE", old: dict[str, Any] | None = None,
            kind: str = "Pod", group: str = "", namespace: str | None = None, name: str | None = None,
            username: str = "alice", groups: tuple[str, ...] = ("system:authenticated",), dry_run: bool = False,
            sub_resource: str = "") -> AdmissionRequest:
    source = obj or old or {}
    metadata = source.get("metadata") or {}
    return AdmissionRequest(
        uid=str(uuid.uuid4()), operation=operation, kind={"group": group, "version": "v1", "kind": kind},
        resource={"group": group, "version": "v1", "resource": kind.lower() + "s"}, sub_resource=sub_resource,
        namespace=namespace if namespace is not None else metadata.get("namespace", "team-a"),
        name=name if name is not None else metadata.get("name", ""),
        user_info={"username": username, "groups": list(groups)}, object=obj, old_object=old, dry_run=dry_run)


def configmap(name: str, namespace: str = "team-a", data: dict[str, str] | None = None,
              labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels is not None:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data or {}}


def quota_configmap(text: str, name: str = "qos-quota", namespace: str = "team-a") -> dict[str, Any]:
    return configmap(name, namespace, {"quota.yaml": text}, {"qosgate.io/quota": "true"})


def deployment(template_annotations: dict[str, str], name: str = "web", namespace: str = "team-a",
               kind: str = "Deployment") -> dict[str, Any]:
    template = {"metadata": {"annotations": dict(template_annotations), "labels": {"app": name}},
                "spec": {"containers": [container()]}}
    spec: dict[str, Any] = {"template": template}
    if kind == "CronJob":
        spec = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    api = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}
