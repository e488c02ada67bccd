"""Raw pod and node dicts shaped like the API returns them, shared by the kube tests and the bench."""

from __future__ import annotations

from typing import Any


def make_pod(
    name: str,
    namespace: str = "default",
    *,
    uid: str | None = None,
    node: str = "",
    phase: str = "Running",
    memory_min: int | str | None = 256 * 2**20,
    pod_class: str | None = "gold",
    container_class: str | None = None,
    terminating: bool = False,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A two-container pod with the annotations the mutating webhook writes."""
    annotations: dict[str, str] = {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
    if pod_class:
        annotations["qos-resources.qosgate.io"] = f"memory-qos={pod_class}"
    if container_class:
        annotations["qos-resources.qosgate.io/sidecar"] = f"memory-qos={container_class}"
    if memory_min is not None:
        annotations["qosgate.io/memory-min"] = str(memory_min)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": labels or {"app": name.rsplit("-", 1)[0]},
        "annotations": annotations,
    }
    if uid is not None:
        metadata["uid"] = uid
    if terminating:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict[str, Any] = {
        "schedulerName": "default-scheduler",
        "containers": [
            {"name": "app", "image": "registry.example.com/app:1.2.3",
             "ports": [{"containerPort": 8080, "protocol": "TCP"}],
             "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}},
            {"name": "sidecar", "image": "registry.example.com/proxy:4.5",
             "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}},
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": {"phase": phase}}


def make_node(name: str, memory: str = "64Gi", annotations: dict[str, str] | None = None,
              unschedulable: bool = False) -> dict[str, Any]:
    node: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                     "annotations": dict(annotations or {})},
        "spec": {},
        "status": {"allocatable": {"cpu": "16", "memory": memory, "pods": "110"},
                   "capacity": {"cpu": "16", "memory": memory, "pods": "110"}},
    }
    if unschedulable:
        node["spec"]["unschedulable"] = True
    return node
