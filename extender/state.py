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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import floordiv, lt, mul, sub
from typing import Any, Protocol

from qosgate.core.nodefit import MAX_SCORE, STRATEGIES, Fit, Strategy, check_fit, protectable
from qosgate.core.nodetally import BindReservation, NodeTally
from qosgate.core.records import (
    NodeRecord,
    PodRecord,
    node_record_from_raw,
    pod_record_from_raw,
)
from qosgate.core.types import Accounting, ClassKey
from qosgate.kube.store import NodeStore, PodStore

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


@dataclass(frozen=True, slots=True)
class ExtenderSettings:
    protectable_percent: int = 90
    accounting: Accounting = "annotated"
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
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.reservation_ttl <= 0:
            raise ValueError("reservation_ttl must be positive")


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
    """What a pod asks of a node, as the caches count it."""

    uid: str
    namespace: str
    name: str
    memory_min: int
    classes: frozenset[ClassKey]
    problems: tuple[str, ...] = ()

    @property
    def trivial(self) -> bool:
        return not self.memory_min and not self.classes and not self.problems

    @classmethod
    def of_record(cls, record: PodRecord) -> Demand:
        return cls(record.uid, record.namespace, record.name, record.memory_min, record.classes,
                   record.problems)


@dataclass(frozen=True, slots=True)
class FilterResult:
    passed: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    unresolvable: dict[str, str] = field(default_factory=dict)


class ExtenderState:
    """Filter/prioritize/bind decisions plus the reservations of binds in flight. Thread-safe."""

    def __init__(self, pods: PodStore, nodes: NodeStore, settings: ExtenderSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or ExtenderSettings()
        if pods.accounting != self.settings.accounting:
            # The store's records and our per-pod figures must come from the same rule, or they disagree.
            raise ValueError(f"pod store counts {pods.accounting!r} but settings say {self.settings.accounting!r}")
        self._pods = pods
        self._nodes = nodes
        self._clock = clock
        # One lock for filter, prioritize, bind's check-and-reserve and the listeners (GAS pattern).
        self._lock = threading.Lock()
        self._tally = NodeTally()
        # name → (record, protectable bytes or -1 when unreadable, offered classes flattened or None)
        self._node_view: dict[str, _ViewEntry] = {}
        self._memo: OrderedDict[str, Demand] = OrderedDict()
        self._next_sweep = 0.0
        with self._lock:
            # Subscribe first, then load what the stores already hold. Listeners block on our lock until
            # the snapshot is in; an object they touched meanwhile keeps the listener's (newer) view.
            self._touched: set[str] | None = set()
            pods.subscribe(self._on_pod_change)
            nodes.subscribe(self._on_node_change)
            for record in pods.records():
                if record.uid not in self._touched:
                    self._observe(record.uid, record)
            for node in nodes.records():
                if "node/" + node.name not in self._touched:
                    self._set_node(node.name, node)
            self._touched = None

    # --- the watch --------------------------------------------------------------------------------
    def _on_pod_change(self, old: PodRecord | None, new: PodRecord | None) -> None:
        """Pod store listener: keep the tally's bound pods equal to the store's, releasing reservations."""
        record = new if new is not None else old
        if record is None:
            return
        uid = record.uid
        counts = new is not None and new.active and bool(new.node_name) and bool(new.memory_min or new.classes)
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
            self._tally.observe(uid, record.node_name, record.active, record.memory_min, record.classes)

    def _on_node_change(self, old: NodeRecord | None, new: NodeRecord | None) -> None:
        with self._lock:
            if self._touched is not None:
                self._touched.add("node/" + (new or old).name)  # type: ignore[union-attr]
            if new is None:
                if old is not None:
                    self._set_node(old.name, None)
            else:
                self._set_node(new.name, new)

    def _set_node(self, name: str, node: NodeRecord | None) -> None:
        if node is None:
            self._node_view.pop(name, None)
            self._tally.set_budget(name, None)
            return
        entry = self._view_entry(node)
        self._node_view[name] = entry
        # Only nodes with a positive budget take the fast paths; the rest are always decided by check_fit.
        self._tally.set_budget(name, entry[1] if entry[1] > 0 else None)

    def _view_entry(self, node: NodeRecord) -> _ViewEntry:
        """What the filter's per-node loop needs, precomputed when the node changes (rarely).

        Protectable is -1 for a node with unreadable annotations, so no fast path ever passes it. Offered
        classes become one flat {(resource, class): capacity} dict; None still means "offers everything".
        """
        offered = node.offered_classes
        flat = None if offered is None else {(resource, klass): capacity for resource, classes in offered.items()
                                             for klass, capacity in classes.items()}
        return node, -1 if node.problems else protectable(node, self.settings.protectable_percent), flat

    # --- reading pods -----------------------------------------------------------------------------
    def demand_of(self, pod: Mapping[str, Any]) -> Demand:
        """The pod's memory.min and classes, computed exactly as the pod store counts bound pods."""
        demand = Demand.of_record(pod_record_from_raw(pod, self.settings.accounting))
        if not demand.trivial:
            with self._lock:
                self._memo[demand.uid] = demand
                self._memo.move_to_end(demand.uid)
                if len(self._memo) > _DEMAND_MEMO:
                    self._memo.popitem(last=False)
        return demand

    # --- filter & prioritize ----------------------------------------------------------------------
    def filter(self, pod: Mapping[str, Any], node_names: Sequence[str],
               node_objects: Sequence[Any] | None = None) -> FilterResult:
        """Split the scheduler's candidates into fitting, failing now, and never fitting.

        `node_objects` (the `Nodes` form) lets a node our watch has not seen yet be judged from the
        scheduler's own copy instead of failing.
        """
        demand = self.demand_of(pod)
        if demand.trivial:
            # Asks nothing we account: every candidate passes, without touching the lock.
            return FilterResult(passed=list(node_names))
        if demand.problems:
            reason = "pod cannot be placed until it is fixed: " + "; ".join(demand.problems)
            return FilterResult(passed=[], unresolvable=dict.fromkeys(node_names, reason))
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        extra = self._extra_nodes(node_names, node_objects)
        need = demand.memory_min
        classes = demand.classes
        with self._lock:
            self._sweep()
            free_get = self._tally.free_memory.get
            view_get = self._node_view.get
            own = {node: r.memory_min for node, r in self._tally.reservations_of(demand.uid).items()}
            # Fast path for the common "fits" answer (5,000 names per call at 100 % scoring): the check_fit
            # rule over the tally's protectable − used per node (absent for unknown or unreadable nodes),
            # collecting only the names it cannot pass. Those — and anything in doubt — are decided by _fit
            # through check_fit itself, which also words the reason.
            if not classes and not own:
                # map/compress keep the per-node loop in C: free_get(name, -1) < need, for every name.
                slow = list(compress(node_names, map(lt, map(free_get, node_names, repeat(-1)), repeat(need))))
            elif not own:
                slow = self._slow_with_classes(node_names, need, classes)
            else:
                slow = [name for name in node_names
                        if free_get(name, -1) + own.get(name, 0) < need or (entry := view_get(name)) is None
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
        if demand.trivial or demand.problems:
            return [(name, 0) for name in node_names]
        extra = self._extra_nodes(node_names, node_objects)
        percent = self.settings.protectable_percent
        need = demand.memory_min
        with self._lock:
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
        ratios = map(floordiv, map(mul, map(sub, frees, repeat(need)), repeat(MAX_SCORE)), budgets)
        if self.settings.strategy == "spread":
            return list(zip(node_names, map(max, ratios, repeat(0)), strict=True))
        return [(name, MAX_SCORE - ratio if ratio >= 0 else 0) for name, ratio in zip(node_names, ratios, strict=True)]

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
            if not demand.trivial:
                reservation = self._tally.reservation(demand.uid, node)
                if reservation is None:
                    fit = self._fit(demand, node, {})
                    if not fit.ok:
                        return f"node {node} no longer fits pod {namespace}/{name}: {fit.reason}"
                    reservation = BindReservation(demand.uid, namespace, name, node, demand.memory_min,
                                              demand.classes, self._clock() + self.settings.reservation_ttl)
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
        return check_fit(demand.memory_min, demand.classes, node, bound, reserved, class_counts,
                         self.settings.protectable_percent)

    # --- introspection (tests, metrics, the simulator) ----------------------------------------------
    def node_usage(self, node: str) -> tuple[int, int]:
        """(memory.min of pods the watch shows bound, memory.min reserved and not yet visible) on a node."""
        with self._lock:
            return self._tally.bound_memory.get(node, 0), self._tally.reserved_memory.get(node, 0)

    def reservations(self) -> list[BindReservation]:
        with self._lock:
            return list(self._tally)

    def disagreements(self) -> dict[str, tuple[int, int]]:
        """Nodes where our bound figure differs from PodStore.node_memory_min: {node: (ours, store's)}.

        Empty whenever the store is quiet; a watch event in flight can make one node differ for the moment
        between the store applying it and our listener running.
        """
        with self._lock:
            nodes = set(self._tally.bound_memory) | set(self._node_view)
            ours = {node: self._tally.bound_memory.get(node, 0) for node in nodes}
        return {node: (value, self._pods.node_memory_min(node)) for node, value in ours.items()
                if value != self._pods.node_memory_min(node)}

    def clear(self) -> None:
        """Forget every reservation and remembered pod (e.g. a replica that will not serve again)."""
        with self._lock:
            self._tally.clear_reservations()
            self._memo.clear()

    def close(self) -> None:
        self._pods.unsubscribe(self._on_pod_change)
        self._nodes.unsubscribe(self._on_node_change)
