"""Compile a pod's QoS-class requests, through the catalog, into its memory plan and backend annotations.

This is the one computation the mutating webhook writes, the validating webhook re-checks, and
`qosgate explain` prints — so they can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from qosgate.core import annotations as keys
from qosgate.core.backends import render_backends
from qosgate.core.catalog import Catalog, CatalogMemo
from qosgate.core.errors import FieldError, InvalidError
from qosgate.core.memory import (
    InitContainerAmount,
    container_memory,
    container_memory_high,
    container_memory_min,
    is_sidecar,
    pod_total,
)
from qosgate.core.qosresources import QosRequests, extract_requests


@dataclass(frozen=True, slots=True)
class ContainerPlan:
    name: str
    kind: str  # "container", "init" or "sidecar"
    path: str  # e.g. spec.containers[0], for messages
    classes: Mapping[str, str]
    request: int
    limit: int | None
    memory_min: int
    memory_high: int | None
    nri_class: str | None
    memory_class: str | None  # the class of the catalog's memory resource in force, if any


@dataclass(frozen=True, slots=True)
class CompiledPod:
    requests: QosRequests
    containers: tuple[ContainerPlan, ...]
    memory_min: int
    annotations: Mapping[str, str]  # every owned annotation the pod must carry, nothing else
    labels: Mapping[str, str]  # owned labels (koordinator)

    @property
    def has_requests(self) -> bool:
        return bool(self.requests)


def _plan_container(container: Mapping[str, Any], kind: str, path: str, requests: QosRequests,
                    catalog: Catalog, errors: list[FieldError]) -> ContainerPlan | None:
    name = container.get("name", "")
    classes = requests.effective(name)
    try:
        memory = container_memory(container, path)
    except InvalidError as exc:
        errors.extend(exc.errors)
        return None
    memory_min, memory_high, nri_class, memory_class = 0, None, None, None
    for resource, klass in classes.items():
        try:
            qos_class = catalog.lookup(resource, klass, _class_path(requests, name, resource, path))
        except InvalidError as exc:
            errors.extend(exc.errors)
            continue
        if resource != catalog.memory_resource:
            continue
        memory_class = klass
        nri_class = qos_class.nri_class
        if catalog.accounting == "kubelet":
            memory_min = memory.request  # kubelet protects every request in full (KEP-2570)
        else:
            memory_min = container_memory_min(memory.request, qos_class.memory_min_percent)
            memory_high = container_memory_high(memory.request, memory.limit, qos_class.throttle_percent,
                                                memory_min)
    if memory_class is None and catalog.accounting == "kubelet":
        memory_min = memory.request
    return ContainerPlan(name=name, kind=kind, path=path, classes=classes, request=memory.request,
                         limit=memory.limit, memory_min=memory_min, memory_high=memory_high,
                         nri_class=nri_class, memory_class=memory_class)


def _class_path(requests: QosRequests, container: str, resource: str, container_path: str) -> str:
    if resource in requests.containers.get(container, {}):
        return f"{container_path} (qosResources or annotation {keys.CARRIER_CONTAINER_PREFIX}{container})"
    return f"pod qosResources (or annotation {keys.CARRIER_POD})"


_COMPILED: CatalogMemo[CompiledPod] = CatalogMemo()


def compile_key(pod: Mapping[str, Any]) -> bytes | None:
    """Everything compile_pod reads, as bytes: the carrier annotations, qosResources, and per container its
    name, restartPolicy and resources. The replicas of one workload share it; None = don't cache."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    spec = pod.get("spec") or {}
    if not isinstance(annotations, dict | None) or not isinstance(spec, dict):
        return None
    try:
        return orjson.dumps([
            [[k, v] for k, v in (annotations or {}).items() if keys.is_carrier_annotation(k)],
            spec.get("qosResources"),
            [[[c.get("name"), c.get("restartPolicy"), c.get("resources")] for c in spec.get(kind) or ()]
             for kind in ("initContainers", "containers")],
        ])
    except (TypeError, AttributeError, orjson.JSONEncodeError):
        return None


def compile_pod(pod: Mapping[str, Any], catalog: Catalog) -> CompiledPod:
    """Raises InvalidError naming every bad field: carrier syntax, unknown classes, quantities, backends.

    The pod must have passed `qosgate.core.podshape.check_pod_shape` (every caller checks at its door, once).

    Memoised per catalog on what the computation reads: admission sees the same few pod shapes (the replicas
    of each workload) over and over. The result is shared: callers must not mutate it.
    """
    key = compile_key(pod)
    if key is not None:
        hit = _COMPILED.get(key, catalog)
        if hit is not None:
            return hit
    compiled = _compile_pod(pod, catalog)
    if key is not None:
        _COMPILED.put(key, catalog, compiled)
    return compiled


def _compile_pod(pod: Mapping[str, Any], catalog: Catalog) -> CompiledPod:
    requests = extract_requests(pod)
    spec = pod.get("spec") or {}
    errors: list[FieldError] = []
    plans: list[ContainerPlan] = []
    for i, container in enumerate(spec.get("initContainers") or ()):
        plan = _plan_container(container, "sidecar" if is_sidecar(container) else "init",
                               f"spec.initContainers[{i}]", requests, catalog, errors)
        if plan:
            plans.append(plan)
    for i, container in enumerate(spec.get("containers") or ()):
        plan = _plan_container(container, "container", f"spec.containers[{i}]", requests, catalog, errors)
        if plan:
            plans.append(plan)
    if errors:
        # A bad pod-level class is met once per container: report it once.
        raise InvalidError(dict.fromkeys(errors))

    memory_min = pod_total(
        (p.memory_min for p in plans if p.kind == "container"),
        (InitContainerAmount(p.memory_min, p.kind == "sidecar") for p in plans if p.kind != "container"),
    )
    owned_annotations: dict[str, str] = {}
    owned_labels: dict[str, str] = {}
    if requests:
        owned_annotations[keys.MEMORY_MIN] = str(memory_min)
        owned_annotations[keys.RESOLVED] = resolved_summary(requests, plans)
        backend_annotations, owned_labels = render_backends(plans, catalog)
        owned_annotations.update(backend_annotations)
    return CompiledPod(requests=requests, containers=tuple(plans), memory_min=memory_min,
                       annotations=owned_annotations, labels=owned_labels)


def resolved_summary(requests: QosRequests, plans: list[ContainerPlan]) -> str:
    """Human-readable record of what was resolved: the classes in force per container."""
    return orjson.dumps({p.name: dict(p.classes) for p in plans}, option=orjson.OPT_SORT_KEYS).decode()
