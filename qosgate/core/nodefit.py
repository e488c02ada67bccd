"""Does a pod fit a node's protectable memory and QoS-class capacity? (architecture §5.1) — pure, no I/O.

A node fits a pod when the summed memory.min of the pods bound *or reserved* on it plus the pod's own
memory.min stays within what the node can protect, and every QoS class the pod uses is offered by the node
with a free slot. The extender (filter, prioritize, bind), the simulator and the CLI all decide through here,
so there is exactly one definition of "fits".
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Literal, Protocol

from qosgate.core.quantity import format_bytes
from qosgate.core.types import ClassKey

MAX_SCORE = 10  # k8s.io/kube-scheduler/extender/v1 MaxExtenderPriority
Strategy = Literal["spread", "binpack"]
STRATEGIES: tuple[Strategy, ...] = ("spread", "binpack")


class NodeLike(Protocol):
    """The fields of qosgate.core.records.NodeRecord that fit decisions read (kept structural so the core
    does not depend on the watch-cache module)."""

    @property
    def name(self) -> str: ...
    @property
    def allocatable_memory(self) -> int: ...
    @property
    def protectable_override(self) -> int | None: ...
    @property
    def offered_classes(self) -> Mapping[str, Mapping[str, int]] | None: ...


@dataclass(frozen=True, slots=True)
class Fit:
    ok: bool
    # The same words for every node failing the same way: kube-scheduler counts identical reasons into one
    # line of the FailedScheduling event ("0/5000 nodes are available: 4980 <reason>, …"); figures that differ
    # per node would give one line per node and an event nobody can read.
    reason: str = ""
    # True when the pod could never fit this node whatever is evicted: the scheduler then reports the node
    # in FailedAndUnresolvableNodes and skips it for preemption (architecture §7.1).
    unresolvable: bool = False
    # This node's figures, for messages about one node (a refused bind, `qosgate explain`).
    detail: str = ""

    @property
    def message(self) -> str:
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


FITS = Fit(True)


def protectable(node: NodeLike, protectable_percent: int) -> int:
    """Bytes of memory.min the node can honour: the per-node annotation wins, else allocatable × percent."""
    if node.protectable_override is not None:
        return node.protectable_override
    return node.allocatable_memory * protectable_percent // 100


def class_problem(pod_classes: Set[ClassKey], node: NodeLike,
                  class_count_now: Mapping[ClassKey, int]) -> Fit:
    """Every (resource, class) the pod uses must be offered by the node and have a free slot.

    The pod takes one slot per distinct (resource, class), counted the same way as the caches count pods
    already there, so "count + 1 ≤ capacity" is the whole rule; capacity 0 means unlimited (KEP-3008).
    """
    offered = node.offered_classes
    if offered is None or not pod_classes:
        return FITS
    # Sorted so the reason is the same on every call (helps users and tests alike).
    for resource, klass in sorted(pod_classes):
        classes = offered.get(resource)
        if classes is None:
            return Fit(False, f"node does not offer QoS resource {resource}", unresolvable=True)
        capacity = classes.get(klass)
        if capacity is None:
            choices = ", ".join(sorted(classes)) or "none"
            return Fit(False, f"node does not offer {resource} class {klass}", unresolvable=True,
                       detail=f"offers: {choices}")
        if capacity:
            used = class_count_now.get((resource, klass), 0)
            if used + 1 > capacity:
                # Resolvable: evicting a pod of that class frees the slot.
                return Fit(False, f"{resource} class {klass} is full", detail=f"{used} of {capacity} used")
    return FITS


def check_fit(pod_memory_min: int, pod_classes: Set[ClassKey], node: NodeLike, protected_now: int,
              reserved_now: int, class_count_now: Mapping[ClassKey, int], protectable_percent: int,
              kernel_floor: int = 0) -> Fit:
    """Decide whether the pod fits now.

    protected_now: summed memory.min of active pods bound to the node; reserved_now: of reservations not yet
    visible as bound (never the same pod twice — the caller's contract); class_count_now: bound + reserved
    slots per (resource, class); kernel_floor: what the kernel already protects on the node by the node
    agent's report — the node counts as at least that full, whoever granted it (architecture §5.3).
    """
    classes = class_problem(pod_classes, node, class_count_now) if pod_classes else FITS
    if not classes.ok and classes.unresolvable:
        return classes
    if pod_memory_min:
        budget = protectable(node, protectable_percent)
        if pod_memory_min > budget:
            return Fit(False, f"memory.min {format_bytes(pod_memory_min)} exceeds the node's whole protectable "
                              "memory", unresolvable=True, detail=f"{format_bytes(budget)}")
        used = max(protected_now + reserved_now, kernel_floor)
        if used + pod_memory_min > budget:
            free = max(budget - used, 0)
            reason = f"memory.min {format_bytes(pod_memory_min)} exceeds the free protectable memory"
            detail = f"{format_bytes(free)} of {format_bytes(budget)} free"
            # Name both problems so the user does not fix one only to meet the other.
            if not classes.ok:
                reason, detail = f"{reason}; {classes.reason}", f"{detail}; {classes.detail}"
            return Fit(False, reason, detail=detail)
    return classes


def score(free_after: int, protectable_bytes: int, strategy: Strategy) -> int:
    """0..10 from the protectable memory left after placing the pod.

    spread prefers the emptiest node (keeps headroom for big pods everywhere, the scheduler's default
    flavour); binpack prefers the fullest (keeps whole nodes free for the biggest memory.min asks).
    Integer arithmetic so equal inputs always give equal scores on every replica.
    """
    if protectable_bytes <= 0:  # nothing to protect: no preference either way
        return 0
    ratio = min(max(free_after, 0) * MAX_SCORE // protectable_bytes, MAX_SCORE)
    return ratio if strategy == "spread" else MAX_SCORE - ratio
