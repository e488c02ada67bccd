"""What a simulation is asked to do and what it reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qosgate.core.quantity import format_bytes
from qosgate.core.types import Accounting, ClassKey

MI = 2**20
MANAGED_BY = "qosgate-simulate"
SIM_SCHEDULER = "qosgate-simulator"  # so a real cluster's default scheduler leaves the pods to us


@dataclass(frozen=True)
class SimulationConfig:
    pods: int = 200  # synthetic pods to create; 0 schedules only the namespace's existing pending pods
    namespace: str = "qosgate-sim"
    seed: int = 0
    min_memory_min: int = 256 * MI
    max_memory_min: int = 8 * 1024 * MI
    zero_fraction: float = 0.1  # pods asking no memory.min at all
    classes: tuple[ClassKey, ...] = ()
    class_fraction: float = 0.0  # pods that use one of `classes`
    scheduler_name: str = SIM_SCHEDULER
    bind_workers: int = 16  # binds in flight, like the scheduler's asynchronous binding goroutines
    bind_delay: float = 0.0  # max random delay before a bind is sent (delays and reorders binds)
    bind_timeout_rate: float = 0.0  # the scheduler stops waiting for a bind and requeues the pod
    bind_duplicate_rate: float = 0.0  # the same bind is sent twice (a retry after a lost answer)
    nodes_per_filter: int = 0  # 0 = every node (percentageOfNodesToScore 100); else a rotating window
    prioritize: bool = True  # False: the scheduler config has no prioritizeVerb (pick among passing nodes)
    give_up_after: float = 60.0  # seconds of an unreachable/erroring extender before a pod is given up
    max_bind_attempts: int = 20  # binds refused this often mean the extender and the API disagree: give up
    retry_delay: float = 0.05  # pause after an extender error, so a restarting extender is not hammered
    create_workers: int = 8
    accounting: Accounting = "annotated"  # for the final checks; must match the extender's
    protectable_percent: int = 90


@dataclass
class SimulationReport:
    nodes: int = 0
    created: int = 0
    placed: dict[str, str] = field(default_factory=dict)  # namespace/name → node
    unschedulable: dict[str, str] = field(default_factory=dict)  # namespace/name → reason summary
    errors: dict[str, str] = field(default_factory=dict)  # pods given up on: extender unavailable
    seconds: float = 0.0
    filter_calls: int = 0
    bind_calls: int = 0
    bind_failures: int = 0
    extender_errors: int = 0
    overcommitted: dict[str, tuple[int, int]] = field(default_factory=dict)  # node → (bound, protectable)
    missed: dict[str, str] = field(default_factory=dict)  # unschedulable pods that fit a node at the end

    @property
    def pods_per_second(self) -> float:
        return len(self.placed) / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return not self.errors and not self.overcommitted and not self.missed

    def to_json(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "created": self.created, "placed": len(self.placed),
                "unschedulable": self.unschedulable, "errors": self.errors, "seconds": round(self.seconds, 3),
                "podsPerSecond": round(self.pods_per_second, 1), "filterCalls": self.filter_calls,
                "bindCalls": self.bind_calls, "bindFailures": self.bind_failures,
                "extenderErrors": self.extender_errors,
                "overcommitted": {n: {"bound": b, "protectable": p} for n, (b, p) in self.overcommitted.items()},
                "missed": self.missed}

    def render(self) -> str:
        lines = [f"nodes {self.nodes}, pods created {self.created}",
                 f"placed {len(self.placed)} in {self.seconds:.2f}s ({self.pods_per_second:.0f} pods/s), "
                 f"unschedulable {len(self.unschedulable)}, given up {len(self.errors)}",
                 f"filter calls {self.filter_calls}, bind calls {self.bind_calls}, "
                 f"failed binds {self.bind_failures}, extender errors {self.extender_errors}"]
        for pod, reason in sorted(self.unschedulable.items())[:20]:
            lines.append(f"  unschedulable {pod}: {reason}")
        if len(self.unschedulable) > 20:
            lines.append(f"  … and {len(self.unschedulable) - 20} more unschedulable pods")
        for pod, reason in sorted(self.errors.items())[:20]:
            lines.append(f"  given up {pod}: {reason}")
        for node, (used, budget) in sorted(self.overcommitted.items()):
            lines.append(f"  OVERCOMMITTED {node}: memory.min {format_bytes(used)} > protectable "
                         f"{format_bytes(budget)}")
        for pod, node in sorted(self.missed.items()):
            lines.append(f"  MISSED {pod}: left unschedulable but fits {node} now")
        lines.append("no node overcommitted" if not self.overcommitted else "OVERCOMMIT DETECTED")
        return "\n".join(lines)


def summarize_filter(result: Mapping[str, Any], candidates: int) -> str:
    """kube-scheduler-style "0/N nodes are available: …" from FailedNodes and FailedAndUnresolvableNodes.

    Nodes failing for the same reason are counted together, as the scheduler's FitError message does (the
    extender words a reason the same way on every node for that: the figures go in `Fit.detail`).
    """
    reasons: Counter[str] = Counter()
    for key in ("FailedAndUnresolvableNodes", "FailedNodes"):
        for reason in (result.get(key) or {}).values():
            reasons[str(reason)] += 1
    parts = [f"{count} × {reason}" for reason, count in reasons.most_common(4)]
    if len(reasons) > 4:
        parts.append(f"{sum(reasons.values()) - sum(c for _, c in reasons.most_common(4))} more nodes")
    return f"0/{candidates} nodes are available: " + ("; ".join(parts) or "no reason given")
