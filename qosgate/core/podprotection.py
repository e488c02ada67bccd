"""The memory.min a pod will actually carry on a node, by the node's kubelet policy and qosgate's backend.

KEP-2570 Memory QoS (architecture §7.4):
- `tiered` (memoryReservationPolicy TieredReservation, 1.36+): Guaranteed pods get memory.min = requests on
  their pod cgroup (and kubepods.slice = Σ G+B requests); Burstable pods get memory.low only; BestEffort nothing.
- `legacy` (the MemoryQoS gate before 1.36): every container with a memory request gets memory.min = request,
  the pod cgroup the sum.
- `none` (policy None, or the gate off): the kubelet writes no memory.min.
- `unknown`: not observed yet — counted like `legacy`, the largest figure, so an unknown node is never
  over-committed.
qosgate's own figure (the `qosgate.io/memory-min` annotation) applies when qosgate's backend protects the pod
on that node (the NRI plugin is configured, or koordinator). Where both apply the pod carries the larger.

"Requests" is Kubernetes' PodRequests shape (qosgate.core.memory.pod_requests_memory) plus pod overhead.
`pod_view_from_raw` is what the node agent needs of a pod (pure, never raises).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from qosgate.core.annotations import MEMORY_MIN, NRI_MEMORY_MIN_PREFIX
from qosgate.core.cgtree import BESTEFFORT, BURSTABLE, GUARANTEED
from qosgate.core.errors import InvalidError
from qosgate.core.memory import pod_requests_memory
from qosgate.core.quantity import parse_quantity

KubeletPolicy = Literal["none", "legacy", "tiered", "unknown"]
KUBELET_POLICIES: tuple[KubeletPolicy, ...] = get_args(KubeletPolicy)
_STATUS_QOS = {"Guaranteed": GUARANTEED, "Burstable": BURSTABLE, "BestEffort": BESTEFFORT}
_TERMINAL = ("Succeeded", "Failed")


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _containers(spec: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    items = spec.get(kind)
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def _same_quantity(a: object, b: object) -> bool:
    # Whole-unit comparison: cpu "100m" and "200m" compare equal, which can only make a pod look Guaranteed
    # and so count *more* under `tiered` — the safe direction. status.qosClass is normally set anyway.
    if a == b:
        return True
    try:
        return parse_quantity(a, "") == parse_quantity(b, "")
    except InvalidError:
        return False


def pod_qos_class(pod: Mapping[str, Any]) -> str:
    """status.qosClass when set (the API server fills it at creation), else Kubernetes' GetPodQOS rules on
    cpu and memory of every init and app container."""
    reported = _dict(pod.get("status")).get("qosClass")
    status_qos = _STATUS_QOS.get(reported) if isinstance(reported, str) else None
    if status_qos is not None:
        return status_qos
    spec = _dict(pod.get("spec"))
    any_set = False
    guaranteed = True
    for container in _containers(spec, "initContainers") + _containers(spec, "containers"):
        resources = _dict(container.get("resources"))
        requests, limits = _dict(resources.get("requests")), _dict(resources.get("limits"))
        for resource in ("cpu", "memory"):
            request, limit = requests.get(resource), limits.get(resource)
            if request is not None or limit is not None:
                any_set = True
            if limit is None or (request is not None and not _same_quantity(request, limit)):
                guaranteed = False
    if not any_set:
        return BESTEFFORT
    return GUARANTEED if guaranteed else BURSTABLE


def pod_requests_total(pod: Mapping[str, Any]) -> int:
    """PodRequests for memory (app + sidecars vs init peaks) plus spec.overhead.memory. Raises InvalidError."""
    spec = _dict(pod.get("spec"))
    total = pod_requests_memory(spec)
    overhead = _dict(spec.get("overhead")).get("memory")
    if overhead is not None:
        total += parse_quantity(overhead, "spec.overhead.memory")
    return total


def kernel_memory_min(qos_class: str, requests: int, qosgate_min: int, policy: str, qosgate_protects: bool) -> int:
    """The rule on plain fields (for callers that already hold them, e.g. a PodRecord plus requests)."""
    if policy == "tiered":
        kubelet = requests if qos_class == GUARANTEED else 0
    elif policy == "none":
        kubelet = 0
    else:  # legacy, and unknown counted as the largest
        kubelet = requests
    return max(kubelet, qosgate_min if qosgate_protects else 0)


@dataclass(frozen=True, slots=True)
class PodProtection:
    memory_min: int
    kubelet_part: int
    qosgate_part: int
    qos_class: str
    problems: tuple[str, ...] = ()


def qosgate_memory_min(pod: Mapping[str, Any]) -> tuple[int, str | None]:
    value = _dict(_dict(pod.get("metadata")).get("annotations")).get(MEMORY_MIN)
    if value is None:
        return 0, None
    try:
        return parse_quantity(value, f"metadata.annotations[{MEMORY_MIN}]"), None
    except InvalidError as exc:
        return 0, str(exc)


def pod_protection(pod: Mapping[str, Any], policy: str, qosgate_protects: bool) -> PodProtection:
    """What `pod` will carry as memory.min on a node with kubelet `policy`. Never raises: an unreadable
    request is counted as 0 for the kubelet part and reported in `problems`."""
    problems = []
    qos = pod_qos_class(pod)
    try:
        requests = pod_requests_total(pod)
    except (InvalidError, AttributeError, TypeError) as exc:
        requests = 0
        problems.append(str(exc) if isinstance(exc, InvalidError) else f"spec: unreadable containers ({exc})")
    qosgate, problem = qosgate_memory_min(pod)
    if problem:
        problems.append(problem)
    total = kernel_memory_min(qos, requests, qosgate, policy, qosgate_protects)
    kubelet = kernel_memory_min(qos, requests, 0, policy, False)
    return PodProtection(total, kubelet, qosgate if qosgate_protects else 0, qos, tuple(problems))


def pod_kernel_memory_min(pod: Mapping[str, Any], policy: str, qosgate_protects: bool) -> int:
    """Shortcut: pod_protection(...).memory_min."""
    return pod_protection(pod, policy, qosgate_protects).memory_min


@dataclass(frozen=True, slots=True)
class PodView:
    """What the node agent reads of a pod bound to its node."""

    uid: str
    namespace: str
    name: str
    qos: str
    active: bool  # not Succeeded/Failed
    memory_min: int  # qosgate.io/memory-min (0 when absent)
    nri_min: Mapping[str, int] = field(default_factory=dict)  # container name → memory.min.memory-qos.nri.io/<c>
    container_ids: Mapping[str, str] = field(default_factory=dict)  # running container name → runtime id
    problems: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _runtime_id(container_id: object) -> str | None:
    if not isinstance(container_id, str) or "://" not in container_id:
        return None
    return container_id.split("://", 1)[1] or None


def pod_view_from_raw(pod: Mapping[str, Any]) -> PodView:
    metadata = _dict(pod.get("metadata"))
    status = _dict(pod.get("status"))
    annotations = _dict(metadata.get("annotations"))
    problems = []
    memory_min, problem = qosgate_memory_min(pod)
    if problem:
        problems.append(problem)
    nri: dict[str, int] = {}
    for key, value in annotations.items():
        if isinstance(key, str) and key.startswith(NRI_MEMORY_MIN_PREFIX):
            try:
                nri[key[len(NRI_MEMORY_MIN_PREFIX):]] = parse_quantity(value, f"metadata.annotations[{key}]")
            except InvalidError as exc:
                problems.append(str(exc))
    ids: dict[str, str] = {}
    for kind in ("initContainerStatuses", "containerStatuses"):
        statuses = status.get(kind)
        for entry in statuses if isinstance(statuses, list) else ():
            if not isinstance(entry, dict) or "running" not in _dict(entry.get("state")):
                continue
            runtime_id = _runtime_id(entry.get("containerID"))
            if runtime_id and isinstance(entry.get("name"), str):
                ids[entry["name"]] = runtime_id
    uid, namespace, name = metadata.get("uid"), metadata.get("namespace"), metadata.get("name")
    return PodView(
        uid=uid if isinstance(uid, str) else "",
        namespace=namespace if isinstance(namespace, str) else "",
        name=name if isinstance(name, str) else "",
        qos=pod_qos_class(pod),
        active=status.get("phase") not in _TERMINAL,
        memory_min=memory_min,
        nri_min=nri,
        container_ids=ids,
        problems=tuple(problems),
    )
