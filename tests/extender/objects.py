"""Pod and node dicts shaped like the API's JSON, for the extender and simulator tests."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from qosgate.core.annotations import CARRIER_POD, MEMORY_MIN, NODE_QOS_CLASSES, PROTECTABLE_MEMORY

GI = 2**30
_uids = itertools.count(1)


def make_node(name: str, allocatable: str = "32Gi", *, protectable: str | None = None,
              classes: str | None = None, unschedulable: bool = False) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    if protectable is not None:
        annotations[PROTECTABLE_MEMORY] = protectable
    if classes is not None:
        annotations[NODE_QOS_CLASSES] = classes
    node: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": f"node-{name}", "annotations": annotations,
                     "labels": {"kubernetes.io/hostname": name}},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {"allocatable": {"memory": allocatable, "cpu": "8", "pods": "110"},
                   "capacity": {"memory": allocatable, "cpu": "8", "pods": "110"}},
    }
    return node


def make_pod(name: str, memory_min: int | None = None, *, namespace: str = "default", uid: str | None = None,
             classes: Mapping[str, str] | None = None, node: str = "", phase: str = "Pending",
             request: str | None = None) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    if memory_min is not None:
        annotations[MEMORY_MIN] = str(memory_min)
    if classes:
        annotations[CARRIER_POD] = ",".join(f"{r}={c}" for r, c in classes.items())
    container: dict[str, Any] = {"name": "app", "image": "registry.example/app:1"}
    if request is not None:
        container["resources"] = {"requests": {"memory": request}, "limits": {"memory": request}}
    spec: dict[str, Any] = {"containers": [container], "schedulerName": "default-scheduler"}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}-{next(_uids)}",
                     "annotations": annotations},
        "spec": spec,
        "status": {"phase": phase},
    }


def bound(pod: Mapping[str, Any], node: str, phase: str = "Running") -> dict[str, Any]:
    """The pod as the watch shows it once bound (and, by default, running)."""
    return {**pod, "spec": {**pod["spec"], "nodeName": node}, "status": {"phase": phase}}
