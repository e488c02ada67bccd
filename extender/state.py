"""The extender's decisions: filter, prioritize and bind over the watch caches plus an assume cache.

Why an assume cache. kube-scheduler handles one pod at a time, *assumes* the chosen node and binds
asynchronously; it never tells an extender about assumed pods (architecture §7.1). A filter-only extender therefore
double-books: the next pod's filter runs before the previous binding reaches our watch. So qosgate is the
binder: `bind` re-checks the fit and records a *reservation* under the same lock `filter` takes (the
Intel GAS filter/bind-under-one-lock pattern), and every filter counts reservations as if they were bound.

Why the lock is not held across the binding POST. GAS keeps its lock for the whole bind, which serialises
every bind behind one API round trip (≈ 5–50 ms) and caps throughput at 20–200 pods/s, and stalls every
filter behind a slow API. We reserve under the lock, release it, POST, and roll back on a definite
failure. Exactness is kept because the reservation is already counted by every concurrent filter and bind
while the POST is in flight; a failure only ever *returns* capacity.

Counting each pod exactly once. The per-node figures live in a NodeTally (qosgate/core/nodetally.py) fed by the pod
store's listener under this lock: in the one call where the watch shows a pod bound (or finished, or
gone), its reservation is released and the bound pod is counted. Filters hold the same lock, so no filter
can see both or neither. The ledger mirrors `PodStore.node_memory_min` (tests check they agree); keeping
our own copy is what makes the hand-over atomic, and it keeps the per-node loop to plain dict lookups.

Outcomes of the binding POST (see extender/binder.py): bound, or already bound to this node (a retried
bind after a timeout), keep the reservation until the watch confirms it; bound elsewhere or rejected
(404, 403, 422, UID mismatch) roll it back; an ambiguous failure (timeout, 5xx, connection reset) keeps it
— the binding may have landed — until the watch tells or the TTL passes.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import compress, repeat
from operator import floordiv, lt, mul, sub
from typing import Any, Protocol

from qosgate.core.catalog import KUBELET_POLICIES
from qosgate.core.cgtree import BURSTABLE
from qosgate.core.errors import InvalidError
from qosgate.core.nodefit import MAX_SCORE, STRATEGIES, Fit, Strategy, check_fit, protectable
from qosgate.core.nodeoffer import parse_node_offer
from qosgate.core.nodereport import POLICIES as KUBELET_POLICY_VALUES
from qosgate.core.nodereport import NodeReport, parse_time, read_lease
from qosgate.core.nodetally import BindReservation, NodeTally
from qosgate.core.podprotection import kernel_memory_min
from qosgate.core.records import (
    NodeRecord,
    PodRecord,
    freeze_offer,
    node_record_from_raw,
    pod_record_from_raw,
)
from qosgate.core.types import Accounting, ClassKey
from qosgate.kube.store import NodeStore, ObjectStore, PodStore

log = logging.getLogger(__name__)

NOT_CACHED = "node is not in qosgate's node cache yet"
_NO_CLASSES: frozenset[ClassKey] = frozenset()
_NO_OFFER: Mapping[str, int] = {}
_NO_ROOM = -(2**62)  # "free" of a node prioritize knows nothing about: no pod fits, the score is 0
_ViewEntry = tuple[NodeRecord, int, dict[ClassKey, int] | None]
# Filtered pods remembered for bind (ExtenderBindingArgs carries no pod), in case our pod watch has not
# seen a pod the scheduler already has. Bounded: older entries are only a fallback.
_DEMAND_MEMO = 65536
# Expired reservations are swept lazily, at most this often (seconds of the injected clock).
_SWEEP_INTERVAL = 1.0

__all__ = [
    "NOT_CACHED",
    "BindOutcome",
    "BindReservation",
    "BindResult",
    "Binder",
    "Demand",
    "ExtenderSettings",
    "ExtenderState",
    "FilterResult",
]


def _report_node(lease: Mapping[str, Any]) -> str:
    """The node a report Lease speaks for: its holder (read_lease checks the name and the report agree)."""
    spec = lease.get("spec")
    holder = spec.get("holderIdentity") if isinstance(spec, dict) else None
    return holder if isinstance(holder, str) else ""


def _seconds_left(lease: Mapping[str, Any], now: datetime) -> float:
    """Seconds until a fresh report Lease turns stale (renewTime + leaseDurationSeconds)."""
    spec = lease.get("spec") if isinstance(lease.get("spec"), dict) else {}
    renewed = parse_time((spec or {}).get("renewTime"))
    duration = (spec or {}).get("leaseDurationSeconds")
    if renewed is None or not isinstance(duration, int):
        return 0.0
    return max((renewed - now).total_seconds() + duration, 0.0)


@dataclass(frozen=True, slots=True)
class ExtenderSettings:
    protectable_percent: int = 90
    accounting: Accounting = "annotated"
    # The kubelet's memoryReservationPolicy assumed where no node agent reports one (architecture §5.2).
    kubelet_policy: str = "none"
    strategy: Strategy = "spread"
    # How long a reservation may wait for the watch to show its pod bound before it stops counting.
    # Reservations with a bind POST still running never expire; this covers lost watches and outcomes
    # we could not learn, so it is generous compared to watch latency (milliseconds).
    reservation_ttl: float = 300.0

    def __post_init__(self) -> None:
        if not 0 <= self.protectable_percent <= 100:
            raise ValueError(f"protectable_percent must be within 0..100, not {self.protectable_percent}")
        if self.accounting not in ("annotated", "kubelet"):
            raise ValueError(f"accounting must be 'annotated' or 'kubelet', not {self.accounting!r}")
        if self.kubelet_policy not in KUBELET_POLICIES:
            raise ValueError(f"kubelet_policy must be one of {', '.join(KUBELET_POLICIES)}, "
                             f"not {self.kubelet_policy!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.reservation_ttl <= 0:
            raise ValueError("reservation_ttl must be positive")

    @property
    def default_policy(self) -> str:
        """The policy of a node without a report or label: the kubelet backend means every request counts."""
        return "legacy" if self.accounting == "kubelet" and self.kubelet_policy == "none" else self.kubelet_policy


class BindOutcome(enum.Enum):
    BOUND = "bound"
    ALREADY_BOUND_HERE = "already bound to this node"  # e.g. the scheduler retried after a timeout
    BOUND_ELSEWHERE = "bound to another node"
    REJECTED = "rejected"  # definite: the pod is not bound by this call (404, 403, 422, UID changed…)
    UNKNOWN = "unknown"  # ambiguous: timeout, 5xx, connection lost — the binding may have landed


@dataclass(frozen=True, slots=True)
class BindResult:
    outcome: BindOutcome
    message: str = ""

    @property
    def bound_here(self) -> bool:
        return self.outcome in (BindOutcome.BOUND, BindOutcome.ALREADY_BOUND_HERE)


class Binder(Protocol):
    """Posts the pods/binding subresource; never raises for API answers, it classifies them."""

    def bind(self, namespace: str, name: str, uid: str, node: str) -> BindResult: ...


@dataclass(frozen=True, slots=True)
class Demand:
    """What a pod asks of a node, as the caches count it: its memory.min depends on the node's kubelet policy."""

    uid: str
    namespace: str
    name: str
    classes: frozenset[ClassKey]
    problems: tuple[str, ...] = ()
    qosgate_min: int = 0
    requests_memory: int = 0
    qos_class: str = BURSTABLE

    def need(self, policy: str) -> int:
        """The memory.min the pod will carry on a node with this kubelet policy (architecture §5.2)."""
        return kernel_memory_min(self.qos_class, self.requests_memory, self.qosgate_min, policy, True)

    def trivial(self, policies: Iterable[str]) -> bool:
        """Asks nothing on any node with one of these policies."""
        return not self.classes and not self.problems and not any(self.need(p) for p in policies)

    @classmethod
    def of_record(cls, record: PodRecord) -> Demand:
        return cls(record.uid, record.namespace, record.name, record.classes, record.problems, record.qosgate_min,
                   record.requests_memory, record.qos_class)


@dataclass(frozen=True, slots=True)
class NodeSummary:
    name: str
    protectable: int  # -1 when the node's annotations cannot be read
    bound: int
    reserved: int
    kernel_floor: int  # Σ memory.min the kernel already holds under kubepods (fresh report), else 0
    policy: str
    report: str  # none | fresh | stale
    kernel_protected: int | None
    drift: int | None
    classes: list[str] | None  # None = offers every class
    problems: tuple[str, ...]

    @property
    def accounted(self) -> int:
        return max(self.bound + self.reserved, self.kernel_floor)

    @property
    def headroom(self) -> int:
        return self.protectable - self.accounted


@dataclass(frozen=True, slots=True)
class FilterResult:
    passed: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    unresolvable: dict[str, str] = field(default_factory=dict)


class ExtenderState:
    """Filter/prioritize/bind decisions plus the reservations of binds in flight. Thread-safe."""

    def __init__(self, pods: PodStore, nodes: NodeStore, settings: ExtenderSettings | None = None,
                 clock: Callable[[], float] = time.monotonic, reports: ObjectStore | None = None,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings or ExtenderSettings()
        self._pods = pods
        self._nodes = nodes
        self._reports_store = reports
        self._clock = clock
        self._wall_clock = wall_clock
        # One lock for filter, prioritize, bind's check-and-reserve and the listeners (GAS pattern).
        self._lock = threading.Lock()
        self._tally = NodeTally()
        # name → (effective record: budget and offers as the node can honour them, protectable bytes or -1
        # when unreadable, offered classes flattened or None)
        self._node_view: dict[str, _ViewEntry] = {}
        # Node agent reports: name → (report or None when stale/unusable, monotonic time it turns stale).
        self._reports: dict[str, tuple[NodeReport | None, float]] = {}
        # The last fresh report per node. When the agent stops reporting, the protection it last saw stays in
        # the kernel (nobody lowers it), so its floor and budget cap keep counting; only the kubelet policy
        # becomes unknown.
        self._last_reports: dict[str, NodeReport] = {}
        # Nodes whose kubelet policy differs from the default (sparse: most clusters are uniform), and the
        # set of policies in force anywhere, read without the lock by the filter's first check.
        self._policy: dict[str, str] = {}
        self._policies: frozenset[str] = frozenset({self.settings.default_policy})
        self._memo: OrderedDict[str, Demand] = OrderedDict()
        self._next_sweep = 0.0
        with self._lock:
            # Subscribe first, then load what the stores already hold. Listeners block on our lock until
            # the snapshot is in; an object they touched meanwhile keeps the listener's (newer) view.
            self._touched: set[str] | None = set()
            pods.subscribe(self._on_pod_change)
            nodes.subscribe(self._on_node_change)
            if reports is not None:
                reports.subscribe(self._on_report_change)
                for lease in reports.records():
                    self._set_report(lease)
            for node in nodes.records():
                if "node/" + node.name not in self._touched:
                    self._set_node(node.name, node)
            for record in pods.records():
                if record.uid not in self._touched:
                    self._observe(record.uid, record)
            self._touched = None

    # --- the watch --------------------------------------------------------------------------------
    def _on_pod_change(self, old: PodRecord | None, new: PodRecord | None) -> None:
        """Pod store listener: keep the tally's bound pods equal to the store's, releasing reservations."""
        record = new if new is not None else old
        if record is None:
            return
        uid = record.uid
        counts = new is not None and new.active and bool(new.node_name) and bool(
            new.qosgate_min or new.requests_memory or new.classes)
        tally = self._tally
        if (not counts and not tally.is_counted(uid) and not tally.has_reservations(uid)
                and self._touched is None):
            return  # nothing to count or release: the common case for most pod events, without the lock
        with self._lock:
            if self._touched is not None:
                self._touched.add(uid)
            self._observe(uid, new)

    def _observe(self, uid: str, record: PodRecord | None) -> None:
        if record is None:
            self._tally.observe(uid, "", False, 0, _NO_CLASSES, exists=False)
        else:
            node = record.node_name
            memory = record.carried_min(self._policy.get(node, self.settings.default_policy)) if node else 0
            self._tally.observe(uid, node, record.active, memory, record.classes)

    def _on_node_change(self, old: NodeRecord | None, new: NodeRecord | None) -> None:
        with self._lock:
            if self._touched is not None:
                self._touched.add("node/" + (new or old).name)  # type: ignore[union-attr]
            if new is None:
                if old is not None:
                    self._set_node(old.name, None)
            else:
                self._set_node(new.name, new)

    def _on_report_change(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        with self._lock:
            if new is None:
                if old is not None:
                    node = _report_node(old)
                    self._last_reports.pop(node, None)
                    if self._reports.pop(node, None) is not None:
                        self._refresh_node(node)
            else:
                self._set_report(new)

    def _set_report(self, lease: Mapping[str, Any]) -> None:
        """Record a node's report Lease (lock held); a report naming another node than its Lease is ignored."""
        node = _report_node(lease)
        if not node:
            return
        read = read_lease(lease, node, self._wall_clock())
        if read.report is None and read.problem and not read.problem.startswith("report is stale"):
            log.warning("node report lease for %s ignored: %s", node, read.problem)
        stale_at = self._clock() + _seconds_left(lease, self._wall_clock()) if read.usable else -1.0
        self._reports[node] = (read.report if read.usable else None, stale_at)
        if read.usable and read.report is not None:
            self._last_reports[node] = read.report
        self._refresh_node(node)

    def _refresh_node(self, name: str) -> None:
        """Recompute a node's view from its record and report (lock held)."""
        node = self._nodes.get(name)
        if node is not None:
            self._set_node(name, node)

    def _set_node(self, name: str, node: NodeRecord | None) -> None:
        if node is None:
            self._node_view.pop(name, None)
            self._tally.set_budget(name, None)
            self._tally.set_floor(name, 0)
            self._set_policy(name, self.settings.default_policy)
            return
        report = self._reports.get(name)
        fresh = report[0] if report is not None else None
        # A stale report's figures still count (the kernel keeps what it protected); see _last_reports.
        known = fresh if fresh is not None else self._last_reports.get(name) if report is not None else None
        entry = self._view_entry(node, known)
        self._node_view[name] = entry
        # What the kernel already protects under kubepods counts, whoever granted it.
        self._tally.set_floor(name, known.demanded_bytes if known is not None else 0)
        # Only nodes with a positive budget take the fast paths; the rest are always decided by check_fit.
        self._tally.set_budget(name, entry[1] if entry[1] > 0 else None)
        self._set_policy(name, self._node_policy(node, report))

    def _node_policy(self, node: NodeRecord, report: tuple[NodeReport | None, float] | None) -> str:
        """The kubelet's policy on the node: a fresh report's observation, else the admin's label, else the
        catalog's default; a report that went stale counts as unknown (the largest figure)."""
        if report is not None:
            fresh = report[0]
            if fresh is None:
                return "unknown"
            if fresh.kubelet_policy != "unknown":
                return fresh.kubelet_policy
        if node.kubelet_policy is not None:
            return node.kubelet_policy
        return self.settings.default_policy

    def _set_policy(self, name: str, policy: str) -> None:
        previous = self._policy.get(name, self.settings.default_policy)
        if policy == self.settings.default_policy:
            self._policy.pop(name, None)
        else:
            self._policy[name] = policy
        if policy != previous:
            self._policies = frozenset({self.settings.default_policy, *self._policy.values()})
            for record in self._pods.on_node(name):  # the pods there now carry another figure
                self._observe(record.uid, record)

    def _view_entry(self, node: NodeRecord, report: NodeReport | None) -> _ViewEntry:
        """What the filter's per-node loop needs, precomputed when the node or its report changes (rarely).

        With a fresh report the budget is the smaller of the node's and the agent's (which knows protection
        outside kubepods and whether the node can enforce anything at all), and the classes offered are the
        agent's, else the node annotation's. Protectable is -1 for a node with unreadable annotations, so no
        fast path ever passes it. Offered classes become one flat {(resource, class): capacity} dict; None
        still means "offers everything".
        """
        if node.problems:
            return node, -1, None
        budget = protectable(node, self.settings.protectable_percent)
        offered = node.offered_classes
        if report is not None:
            budget = min(budget, report.protectable_bytes)
            if report.offered_classes is not None:
                try:
                    offered = freeze_offer(parse_node_offer(report.offered_classes, "report.offeredClasses"))
                except InvalidError as exc:
                    log.warning("node %s: report's offered classes unreadable, using the node's: %s", node.name, exc)
            node = replace(node, protectable_override=budget, offered_classes=offered)
        flat = None if offered is None else {(resource, klass): capacity for resource, classes in offered.items()
                                             for klass, capacity in classes.items()}
        return node, budget, flat

    # --- the catalog ------------------------------------------------------------------------------
    def set_settings(self, settings: ExtenderSettings) -> None:
        """A new catalog came into force: recompute every node and, if the default policy changed, every pod's
        figure — atomically with respect to filter and bind. Committed pods are never evicted: a lowered
        budget only stops new placements on nodes that are now full."""
        with self._lock:
            old = self.settings
            self.settings = settings
            if settings.default_policy != old.default_policy:
                # Nodes on the old default now differ from the new one, and vice versa: rebuild the map.
                self._policy = {}
                self._policies = frozenset({settings.default_policy})
                for node in self._nodes.records():
                    self._set_node(node.name, node)
                for pod in self._pods.records():
                    if pod.node_name:
                        self._observe(pod.uid, pod)
            elif settings.protectable_percent != old.protectable_percent:
                for node in self._nodes.records():
                    self._set_node(node.name, node)

    # --- reading pods -----------------------------------------------------------------------------
    def demand_of(self, pod: Mapping[str, Any]) -> Demand:
        """The pod's memory.min (per kubelet policy) and classes, computed as the caches count bound pods."""
        demand = Demand.of_record(pod_record_from_raw(pod, self.settings.accounting))
        if not demand.trivial(KUBELET_POLICY_VALUES):
            with self._lock:
                self._memo[demand.uid] = demand
                self._memo.move_to_end(demand.uid)
                if len(self._memo) > _DEMAND_MEMO:
                    self._memo.popitem(last=False)
        return demand

    def _need_of(self, demand: Demand) -> Callable[[str], int]:
        """name → the pod's memory.min on that node (lock held)."""
        default = demand.need(self.settings.default_policy)
        if not self._policy:
            return lambda _name: default
        needs = {policy: demand.need(policy) for policy in self._policies}
        policy_get = self._policy.get
        default_policy = self.settings.default_policy
        return lambda name: needs[policy_get(name, default_policy)]

    # --- filter & prioritize ----------------------------------------------------------------------
    def filter(self, pod: Mapping[str, Any], node_names: Sequence[str],
               node_objects: Sequence[Any] | None = None) -> FilterResult:
        """Split the scheduler's candidates into fitting, failing now, and never fitting.

        `node_objects` (the `Nodes` form) lets a node our watch has not seen yet be judged from the
        scheduler's own copy instead of failing.
        """
        demand = self.demand_of(pod)
        if demand.trivial(self._policies):
            # Asks nothing we account on any node: every candidate passes, without touching the lock.
            return FilterResult(passed=list(node_names))
        if demand.problems:
            reason = "pod cannot be placed until it is fixed: " + "; ".join(demand.problems)
            return FilterResult(passed=[], unresolvable=dict.fromkeys(node_names, reason))
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        extra = self._extra_nodes(node_names, node_objects)
        classes = demand.classes
        with self._lock:
            self._sweep()
            free_get = self._tally.free_memory.get
            view_get = self._node_view.get
            own = {node: r.memory_min for node, r in self._tally.reservations_of(demand.uid).items()}
            uniform = not self._policy
            need = demand.need(self.settings.default_policy)
            # Fast path for the common "fits" answer (5,000 names per call at 100 % scoring): the check_fit
            # rule over the tally's protectable − used per node (absent for unknown or unreadable nodes),
            # collecting only the names it cannot pass. Those — and anything in doubt — are decided by _fit
            # through check_fit itself, which also words the reason.
            if uniform and not classes and not own:
                # map/compress keep the per-node loop in C: free_get(name, -1) < need, for every name.
                slow = list(compress(node_names, map(lt, map(free_get, node_names, repeat(-1)), repeat(need))))
            elif uniform and not own:
                slow = self._slow_with_classes(node_names, need, classes)
            else:
                need_of = self._need_of(demand)
                slow = [name for name in node_names
                        if free_get(name, -1) + own.get(name, 0) < need_of(name) or (entry := view_get(name)) is None
                        or (classes and not self._classes_fit(classes, entry[0], name, demand.uid))]
            rejected: set[str] = set()
            for name in slow:
                fit = self._fit(demand, name, extra)
                if fit.ok:
                    continue
                rejected.add(name)
                if fit.unresolvable:
                    unresolvable[name] = fit.reason
                else:
                    failed[name] = fit.reason
            # Input order kept, as the scheduler maps the answer back onto its own list.
            passed = [name for name in node_names if name not in rejected] if rejected else list(node_names)
        return FilterResult(passed=passed, failed=failed, unresolvable=unresolvable)

    def _slow_with_classes(self, node_names: Sequence[str], need: int, classes: frozenset[ClassKey]) -> list[str]:
        """The fast path for a pod with classes: names it cannot pass (lock held)."""
        view_get = self._node_view.get
        free_get = self._tally.free_memory.get
        slots = [(key, self._tally.used_slots_by_class.get(key, {})) for key in classes]
        slow: list[str] = []
        for name in node_names:
            entry = view_get(name)
            if entry is None or free_get(name, -1) < need:
                slow.append(name)
                continue
            offered = entry[2]
            if offered is None:
                continue
            for key, used in slots:
                capacity = offered.get(key)
                if capacity is None or (capacity and used.get(name, 0) >= capacity):
                    slow.append(name)
                    break
        return slow

    def _classes_fit(self, classes: frozenset[ClassKey], node: NodeRecord, name: str, uid: str) -> bool:
        """True when every class is offered with a free slot (the class half of check_fit)."""
        offered = node.offered_classes
        if offered is None:
            return True
        for key in classes:
            capacity = offered.get(key[0], _NO_OFFER).get(key[1])
            if capacity is None:
                return False
            if capacity and self._tally.class_count(name, key, uid) + 1 > capacity:
                return False
        return True

    def prioritize(self, pod: Mapping[str, Any], node_names: Sequence[str],
                   node_objects: Sequence[Any] | None = None) -> list[tuple[str, int]]:
        """Score 0..10 by protectable memory left after placing the pod (settings.strategy).

        Pods that ask nothing get 0 everywhere: we have no reason to steer them, and a flat score leaves
        the scheduler's own plugins in charge.
        """
        demand = self.demand_of(pod)
        if demand.trivial(self._policies) or demand.problems:
            return [(name, 0) for name in node_names]
        extra = self._extra_nodes(node_names, node_objects)
        percent = self.settings.protectable_percent
        with self._lock:
            need_of = self._need_of(demand)
            needs: Any = (repeat(need_of("")) if not self._policy else list(map(need_of, node_names)))
            free_get = self._tally.free_memory.get
            budget_get = self._tally.budget.get
            # Unknown nodes (and nodes without a positive budget) get free = -∞ and budget 1: score 0.
            frees = list(map(free_get, node_names, repeat(_NO_ROOM)))
            budgets = list(map(budget_get, node_names, repeat(1)))
            own = self._tally.reservations_of(demand.uid)
            if own or extra:
                for i, name in enumerate(node_names):
                    if name in own and frees[i] != _NO_ROOM:
                        frees[i] += own[name].memory_min
                    elif name in extra and frees[i] == _NO_ROOM:
                        budget = protectable(extra[name], percent)
                        if budget > 0:
                            budgets[i] = budget
                            frees[i] = budget - self._tally.used_memory_by_node.get(name, 0)
        # nodefit.score written out, outside the lock, as C-level maps over the columns (this runs for every
        # candidate of every pod): ratio = (free − need) × 10 // budget. free ≤ budget always (usage is never
        # negative), so the ratio is at most 10; a node the pod does not fit has a negative ratio → score 0.
        ratios = map(floordiv, map(mul, map(sub, frees, needs), repeat(MAX_SCORE)), budgets)
        if self.settings.strategy == "spread":
            return list(zip(node_names, map(max, ratios, repeat(0)), strict=True))
        return [(name, MAX_SCORE - ratio if ratio >= 0 else 0) for name, ratio in zip(node_names, ratios, strict=True)]

    # --- preempt ----------------------------------------------------------------------------------
    def preempt(self, pod: Mapping[str, Any], victims: Mapping[str, tuple[Sequence[str], int]]
                ) -> dict[str, tuple[Sequence[str], int]]:
        """Keep the nodes where evicting the scheduler's victims frees enough protectable memory and class
        slots for the pod; the victims themselves are never changed (the scheduler chose them by priority and
        PodDisruptionBudgets) and no node is added (architecture §7.1)."""
        demand = self.demand_of(pod)
        if demand.problems:
            return {}
        kept: dict[str, tuple[Sequence[str], int]] = {}
        with self._lock:
            for node, (uids, violations) in victims.items():
                if self._fits_after_eviction(demand, node, uids):
                    kept[node] = (uids, violations)
        return kept

    def _fits_after_eviction(self, demand: Demand, name: str, victims: Sequence[str]) -> bool:
        entry = self._node_view.get(name)
        if entry is None or entry[0].problems:
            return False
        node = entry[0]
        freed = 0
        freed_classes: dict[ClassKey, int] = {}
        for uid in victims:
            record = self._pods.get(uid)
            if record is not None and record.node_name == name and self._tally.is_counted(uid):
                freed += record.carried_min(self._policy.get(name, self.settings.default_policy))
                for key in record.classes:
                    freed_classes[key] = freed_classes.get(key, 0) + 1
        class_counts: dict[ClassKey, int] = {}
        if demand.classes and node.offered_classes is not None:
            class_counts = {key: count - freed_classes.get(key, 0)
                            for key, count in self._tally.class_counts(name, demand.uid).items()}
        bound = self._tally.bound_memory.get(name, 0)
        reserved = self._tally.used_memory(name, demand.uid) - bound
        need = demand.need(self._policy.get(name, self.settings.default_policy))
        # The kernel's figure drops with the victims too; the ledger's by what they carried.
        floor = max(self._tally.floor.get(name, 0) - freed, 0)
        return check_fit(need, demand.classes, node, bound - freed, reserved, class_counts,
                         self.settings.protectable_percent, floor).ok

    # --- bind -------------------------------------------------------------------------------------
    def bind(self, namespace: str, name: str, uid: str, node: str, binder: Binder) -> str:
        """Re-check, reserve, POST the binding outside the lock, settle. Returns "" or an error message."""
        with self._lock:
            self._sweep()
            record = self._pods.get(uid) if uid else self._pods.get_by_name(namespace, name)
            if record is not None and (record.namespace, record.name) != (namespace, name):
                return f"pod UID {uid} belongs to {record.key}, not {namespace}/{name}"
            if record is not None and record.node_name:
                if record.node_name == node:
                    return ""  # already bound here and counted from the watch: a retried bind
                return f"pod {namespace}/{name} is already bound to node {record.node_name}"
            demand = Demand.of_record(record) if record is not None else self._memo.get(uid)
            if demand is not None and (demand.namespace, demand.name) != (namespace, name):
                return f"pod UID {uid} belongs to {demand.namespace}/{demand.name}, not {namespace}/{name}"
            if demand is None:
                return (f"pod {namespace}/{name} ({uid}) is not in qosgate's pod cache yet; "
                        "the scheduler will retry")
            if demand.problems:
                return f"pod {namespace}/{name} cannot be placed: {'; '.join(demand.problems)}"
            reservation: BindReservation | None = None
            need = demand.need(self._policy.get(node, self.settings.default_policy))
            if need or demand.classes:
                reservation = self._tally.reservation(demand.uid, node)
                if reservation is None:
                    fit = self._fit(demand, node, {})
                    if not fit.ok:
                        return f"node {node} no longer fits pod {namespace}/{name}: {fit.message}"
                    reservation = BindReservation(demand.uid, namespace, name, node, need, demand.classes,
                                                  self._clock() + self.settings.reservation_ttl)
                    self._tally.reserve(reservation)
                # else: a retry of a bind we already reserved for (counted once, whatever the retries).
                reservation.inflight += 1
        try:
            result = binder.bind(namespace, name, uid or demand.uid, node)
        except Exception as exc:  # a binder bug must not leak a reservation forever
            log.exception("binder failed for %s/%s", namespace, name)
            result = BindResult(BindOutcome.UNKNOWN, f"binding failed: {exc}")
        if reservation is not None:
            with self._lock:
                self._settle(reservation, result)
        if result.bound_here:
            return ""
        return result.message or f"binding {namespace}/{name} to {node} failed: {result.outcome.value}"

    def _settle(self, reservation: BindReservation, result: BindResult) -> None:
        reservation.inflight -= 1
        tally = self._tally
        if tally.reservation(reservation.uid, reservation.node) is not reservation:
            return  # the watch confirmed it (or the pod ended) while we were posting: nothing left to do
        if result.bound_here:
            reservation.bound = True
            reservation.deadline = self._clock() + self.settings.reservation_ttl
            # A pod binds once: reservations on other nodes from earlier ambiguous attempts can never land.
            for other, stale in list(tally.reservations_of(reservation.uid).items()):
                if stale is not reservation and not stale.inflight:
                    tally.release(reservation.uid, other)
        elif result.outcome is BindOutcome.UNKNOWN:
            # The binding may have landed: keep counting until the watch or the TTL decides.
            reservation.deadline = self._clock() + self.settings.reservation_ttl
        elif not reservation.inflight and not reservation.bound:
            tally.release(reservation.uid, reservation.node)  # definite failure: give the capacity back

    # --- expiry -----------------------------------------------------------------------------------
    def expire_reservations(self) -> int:
        """Drop reservations past their deadline now; returns how many were dropped."""
        with self._lock:
            return self._expire(self._clock())

    def _sweep(self) -> None:
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_INTERVAL
            self._expire(now)
            # Reports turn stale without any event: the node then counts with the safe figures.
            for node, (report, stale_at) in list(self._reports.items()):
                if report is not None and stale_at <= now:
                    log.warning("node report of %s is stale: its last figures keep counting, the kubelet policy is "
                                "unknown (the largest figure per pod)", node)
                    self._reports[node] = (None, -1.0)
                    self._refresh_node(node)

    def _expire(self, now: float) -> int:
        dropped = 0
        for reservation in self._tally:
            if not reservation.inflight and reservation.deadline <= now:
                self._tally.release(reservation.uid, reservation.node)
                dropped += 1
                log.warning("reservation of %s/%s on %s expired without the watch confirming it (bound=%s)",
                            reservation.namespace, reservation.name, reservation.node, reservation.bound)
        return dropped

    # --- fit --------------------------------------------------------------------------------------
    def _extra_nodes(self, names: Sequence[str], objects: Sequence[Any] | None) -> dict[str, NodeRecord]:
        """Records for nodes the scheduler sent in full but our watch has not delivered yet."""
        if objects is None:
            return {}
        view = self._node_view
        return {name: node_record_from_raw(obj) for name, obj in zip(names, objects, strict=False)
                if isinstance(obj, dict) and name not in view}

    def _fit(self, demand: Demand, name: str, extra: Mapping[str, NodeRecord]) -> Fit:
        """The full decision with its reason (lock held)."""
        entry = self._node_view.get(name)
        node = entry[0] if entry is not None else extra.get(name)
        if node is None:
            return Fit(False, NOT_CACHED)
        if node.problems:
            # Fail closed but resolvable: the admin fixes the annotation, the pod then fits.
            return Fit(False, "node's qosgate annotations cannot be read: " + "; ".join(node.problems))
        class_counts: Mapping[ClassKey, int] = {}
        if demand.classes and node.offered_classes is not None:
            class_counts = self._tally.class_counts(name, demand.uid)
        bound = self._tally.bound_memory.get(name, 0)
        reserved = self._tally.used_memory(name, demand.uid) - bound
        need = demand.need(self._policy.get(name, self.settings.default_policy))
        return check_fit(need, demand.classes, node, bound, reserved, class_counts, self.settings.protectable_percent,
                         self._tally.floor.get(name, 0))

    # --- introspection (tests, metrics, the simulator) ----------------------------------------------
    def explain_fit(self, pod: Mapping[str, Any], node: str) -> Fit:
        """Whether the pod fits the node now, with the node's figures in `detail` (what filter words alike for
        every node, this says for one)."""
        demand = self.demand_of(pod)
        with self._lock:
            return self._fit(demand, node, {})

    def node_usage(self, node: str) -> tuple[int, int]:
        """(memory.min of pods the watch shows bound, memory.min reserved and not yet visible) on a node."""
        with self._lock:
            return self._tally.bound_memory.get(node, 0), self._tally.reserved_memory.get(node, 0)

    def reserved_by_node(self) -> dict[str, int]:
        with self._lock:
            return dict(self._tally.reserved_memory)

    def node_summaries(self) -> list[NodeSummary]:
        """Every node as the extender decides on it (qosgate status): budget, what is bound and reserved,
        what the kernel reports, the policy and the classes offered."""
        with self._lock:
            rows = []
            for name, (node, budget, offered) in self._node_view.items():
                report = self._reports.get(name)
                fresh = report[0] if report is not None else None
                rows.append(NodeSummary(
                    name=name, protectable=budget, bound=self._tally.bound_memory.get(name, 0),
                    reserved=self._tally.reserved_memory.get(name, 0), kernel_floor=self._tally.floor.get(name, 0),
                    policy=self._policy.get(name, self.settings.default_policy),
                    report="none" if report is None else ("fresh" if fresh is not None else "stale"),
                    kernel_protected=fresh.kernel_protected_bytes if fresh is not None else None,
                    drift=fresh.drift_bytes if fresh is not None else None,
                    classes=None if offered is None else sorted(f"{r}={c}" + (f":{n}" if n else "")
                                                                for (r, c), n in offered.items()),
                    problems=tuple(node.problems)))
            return rows

    def reservations(self) -> list[BindReservation]:
        with self._lock:
            return list(self._tally)

    def disagreements(self) -> dict[str, tuple[int, int]]:
        """Nodes where our bound figure differs from a recount of the store's pods: {node: (ours, recount)}.

        Empty whenever the store is quiet; a watch event in flight can make one node differ for the moment
        between the store applying it and our listener running.
        """
        with self._lock:
            nodes = set(self._tally.bound_memory) | set(self._node_view)
            ours = {node: self._tally.bound_memory.get(node, 0) for node in nodes}
            policy = {node: self._policy.get(node, self.settings.default_policy) for node in nodes}
        recount = {node: sum(r.carried_min(policy[node]) for r in self._pods.on_node(node) if r.active)
                   for node in nodes}
        return {node: (value, recount[node]) for node, value in ours.items() if value != recount[node]}

    def clear(self) -> None:
        """Forget every reservation and remembered pod (e.g. a replica that will not serve again)."""
        with self._lock:
            self._tally.clear_reservations()
            self._memo.clear()

    def close(self) -> None:
        self._pods.unsubscribe(self._on_pod_change)
        self._nodes.unsubscribe(self._on_node_change)
