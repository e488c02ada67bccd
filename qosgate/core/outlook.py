"""What the kernel will actually protect for a pod, per kubelet Memory QoS policy, with and without the agent.

`qosgate explain` shows this next to the annotations it would write, because the annotation is not the
protection (architecture §5): a container's memory.min is capped by every ancestor cgroup's, and the writers
differ by backend and kubelet policy:

- container cgroup: the NRI memory-qos plugin writes qosgate's figure (its adjustment replaces the value the
  kubelet put in the container's unified resources); koordlet writes request × minLimitPercent, the same
  figure; with no qosgate backend the kubelet's value stays (`legacy`: the request; `tiered`: the request for
  Guaranteed pods; `none`: nothing).
- pod slice (and the QoS slice and kubepods above it): the kubelet writes the pod's requests where it
  protects the pod (`legacy` always, `tiered` for Guaranteed pods); koordlet raises parents to the sum of
  their children; the NRI plugin writes no ancestor at all. qosgate's node agent raises every ancestor to
  the sum of its children.

Without the agent a container keeps `min(its memory.min, its share of the pod slice's)` — with the NRI
plugin alone on a Burstable pod that is nothing (measured: 17 of 151 MB kept under node pressure). With the
agent it keeps its own memory.min, within the node's protectable budget the extender enforces.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qosgate.core.catalog import Catalog
from qosgate.core.cgtree import BESTEFFORT, BURSTABLE, GUARANTEED
from qosgate.core.compile import CompiledPod
from qosgate.core.errors import InvalidError
from qosgate.core.podprotection import kernel_memory_min, pod_qos_class, pod_requests_total

# The policies a node can run (architecture §5.2); "unknown" is an accounting fallback, not a node state.
SHOWN_POLICIES = ("none", "tiered", "legacy")
_KUBERNETES_QOS_NAMES = {GUARANTEED: "Guaranteed", BURSTABLE: "Burstable", BESTEFFORT: "BestEffort"}


@dataclass(frozen=True, slots=True)
class ContainerOutlook:
    name: str
    kind: str  # "container", "init" or "sidecar"
    carries: int  # memory.min on the container's own cgroup
    writer: str  # who wrote it: "nri-memory-qos", "koordinator", "kubelet" or "" (nobody)
    without_agent: int  # bytes the kernel protects when only the kubelet / koordlet set ancestors
    with_agent: int  # bytes the kernel protects once the agent has raised every ancestor


@dataclass(frozen=True, slots=True)
class PolicyOutlook:
    policy: str
    qos_class: str  # the pod's Kubernetes QoS class, as status.qosClass spells it
    accounted: int  # the memory.min the extender counts for the pod on such a node
    pod_slice_without_agent: int  # the pod slice's memory.min as the kubelet / koordlet leave it
    containers: tuple[ContainerOutlook, ...]
    reason: str  # one line: why "without the agent" is what it is


def _kubelet_protects(policy: str, qos_class: str) -> bool:
    return policy == "legacy" or (policy == "tiered" and qos_class == GUARANTEED)


def _qosgate_writer(catalog: Catalog) -> str:
    for backend in catalog.backends:
        if backend in ("nri-memory-qos", "koordinator"):
            return backend
    return ""


def policy_outlook(pod: Mapping[str, Any], compiled: CompiledPod, catalog: Catalog, policy: str) -> PolicyOutlook:
    qos_class = pod_qos_class(pod)
    try:
        requests = pod_requests_total(pod)
    except InvalidError:  # compile_pod refuses unreadable requests first; stay total anyway
        requests = 0
    kubelet = _kubelet_protects(policy, qos_class)
    writer = _qosgate_writer(catalog)
    carried: list[tuple[str, str, int, str]] = []
    for plan in compiled.containers:
        if writer and plan.memory_min > 0:
            carried.append((plan.name, plan.kind, plan.memory_min, writer))
        elif kubelet and plan.request > 0:
            carried.append((plan.name, plan.kind, plan.request, "kubelet"))
        else:
            carried.append((plan.name, plan.kind, 0, ""))
    # Init containers have finished by the time the app containers run: the pod slice covers the others.
    running_sum = sum(value for _, kind, value, _ in carried if kind != "init")
    pod_slice = requests if kubelet else 0
    if writer == "koordinator":  # koordlet's cgreconcile raises parents to the sum of their children
        pod_slice = max(pod_slice, running_sum)
    containers = []
    for name, kind, value, who in carried:
        if kind == "init" or pod_slice >= running_sum:
            without = min(value, pod_slice)
        else:  # the kernel shares a short parent among its protected children in proportion to their claims
            without = value * pod_slice // running_sum if running_sum else 0
        containers.append(ContainerOutlook(name, kind, value, who, without, value))
    if not running_sum:
        reason = "nothing asks for memory.min"
    elif pod_slice >= running_sum:
        reason = ("koordlet raises the ancestors" if writer == "koordinator" and not kubelet
                  else "the kubelet protects the pod slice")
    elif pod_slice == 0:
        reason = "the pod slice carries memory.min 0, which caps every container in it"
    else:
        reason = "the kubelet's pod slice value is smaller than its containers ask for"
    accounted = kernel_memory_min(qos_class, requests, compiled.memory_min, policy, bool(writer))
    return PolicyOutlook(policy, _KUBERNETES_QOS_NAMES[qos_class], accounted, pod_slice, tuple(containers), reason)


def outlook(pod: Mapping[str, Any], compiled: CompiledPod, catalog: Catalog,
            policies: Sequence[str] = SHOWN_POLICIES) -> list[PolicyOutlook]:
    """One entry per kubelet policy, in the order given."""
    return [policy_outlook(pod, compiled, catalog, policy) for policy in policies]
