"""The memory math, defined once (architecture §2.3): container memory.min / memory.high and the pod-level figure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from qosgate.core.quantity import parse_quantity

PAGE_SIZE = 4096


def container_memory_min(request: int, memory_min_percent: int) -> int:
    """memory.min = floor(request × percent / 100); no request → 0."""
    return request * memory_min_percent // 100


def container_memory_high(request: int, limit: int | None, throttle_percent: int, memory_min: int) -> int | None:
    """KEP-2570 (v1.27) throttle point, page aligned; None when it must not be set.

    Only with a limit above the request (requests == limits is Guaranteed-like and never throttled) and only
    when it lands above memory.min (a throttle below the protected floor would fight the protection).
    """
    if not throttle_percent or limit is None or limit <= request:
        return None
    # Integer arithmetic keeps the figure exact: (req + p × (limit − req)) with p = throttle_percent / 100.
    high = (request * 100 + throttle_percent * (limit - request)) // 100
    high = high // PAGE_SIZE * PAGE_SIZE
    return high if high > memory_min else None


@dataclass(frozen=True, slots=True)
class InitContainerAmount:
    amount: int
    restartable: bool  # a sidecar: restartPolicy Always, runs alongside the app containers


def pod_total(app: Iterable[int], init: Iterable[InitContainerAmount]) -> int:
    """Kubernetes' PodRequests shape applied to any per-container amount.

    max(sum(app) + sum(sidecars), peak over plain init containers of (its amount + sidecars started before it)),
    where a sidecar's own start also counts as a peak together with the sidecars before it.
    """
    total = sum(app)
    sidecars_so_far = 0
    init_peak = 0
    for container in init:
        if container.restartable:
            total += container.amount
            sidecars_so_far += container.amount
            init_peak = max(init_peak, sidecars_so_far)
        else:
            init_peak = max(init_peak, container.amount + sidecars_so_far)
    return max(total, init_peak)


@dataclass(frozen=True, slots=True)
class ContainerMemory:
    request: int
    limit: int | None


def container_memory(container: Mapping[str, Any], path: str) -> ContainerMemory:
    """requests/limits.memory in bytes; a missing request defaults to the limit, as API defaulting does."""
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    limit = parse_quantity(limits["memory"], f"{path}.resources.limits.memory") if "memory" in limits else None
    if "memory" in requests:
        request = parse_quantity(requests["memory"], f"{path}.resources.requests.memory")
    else:
        request = limit or 0
    return ContainerMemory(request=request, limit=limit)


def is_sidecar(container: Mapping[str, Any]) -> bool:
    return container.get("restartPolicy") == "Always"


def pod_requests_memory(spec: Mapping[str, Any]) -> int:
    """Summed memory requests the way the scheduler counts them (kubelet accounting mode, KEP-2570)."""
    app = [container_memory(c, f"spec.containers[{i}]").request
           for i, c in enumerate(spec.get("containers") or ())]
    init = [InitContainerAmount(container_memory(c, f"spec.initContainers[{i}]").request, is_sidecar(c))
            for i, c in enumerate(spec.get("initContainers") or ())]
    return pod_total(app, init)
