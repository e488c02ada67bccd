"""Where pods hide inside workload objects: one walker shared by render, explain and workload admission."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# kind → path (as keys) from the object to its pod template.
TEMPLATE_PATHS: Mapping[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "PodTemplate": ("template",),
}


def pod_templates(obj: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (path, pod-shaped dict) for a Pod, each pod template of a workload, and items of a List."""
    kind = obj.get("kind")
    if kind == "Pod":
        yield "", obj  # type: ignore[misc]
        return
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in obj):
        for i, item in enumerate(obj.get("items") or ()):
            if isinstance(item, dict):
                for path, template in pod_templates(item):
                    yield f"items[{i}]{'.' + path if path else ''}", template
        return
    template_path = TEMPLATE_PATHS.get(kind) if isinstance(kind, str) else None
    if template_path is None:
        return
    node: Any = obj
    for key in template_path:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        yield ".".join(template_path), node


def describe(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name") or metadata.get("generateName") or "<unnamed>"
    namespace = metadata.get("namespace")
    return f"{obj.get('kind', '<no kind>')} {namespace + '/' if namespace else ''}{name}"
