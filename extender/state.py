"""The extender's decisions: filter, prioritize and bind over the watch caches plus an assume cache.

Why an assume cache. kube-scheduler handles one pod at a time, *assumes* the chosen node and binds
asynchronously; it never tells an extender about assumed pods (DESIGN §7). A filter-only extender therefore
double-books: the next pod's filter runs before the previous binding reaches our watch. So qosgate is the
binder: `bind` re-checks the fit and records a *reservation* under the same lock `filter` takes (the
Intel GAS filter/bind-under-one-lock pattern), and every filter counts reservations as if they were bound.

Why the lock is not held across the binding POST. GAS keeps its lock for the whole bind, which serialises
every bind behind one API round trip (≈ 5–50 ms) and caps throughput at 20–200 pods/s. We reserve under the
lock, release it, POST, and roll back on a definite failure. Exactness is kept because the reservation is
already counted by every concurrent filter and bind while the POST is in flight; a failure only ever
*returns* capacity.

Counting each pod exactly once. A reservation stops counting at the moment the pod store shows the pod
bound (or gone), which is exactly when `PodStore.node_memory_min` starts (or stops) counting it. Each
decision first checks every reservation against the store, then reads the store's per-node totals; the
store changes a pod and its totals atomically, so a pod seen bound is already in the totals read later.
The only race left — the pod becoming visible between the two reads — counts it twice for that one
decision: conservative, never an overcommit. A store listener then deletes confirmed reservations so the
set stays as small as the number of binds in flight.

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
from typing import Any, Protocol

from qosgate.kube.records import (
    Accounting,
    ClassKey,
    NodeRecord,
    PodRecord,
    node_record_from_raw,
    pod_record_from_raw,
)
from qosgate.kube.store import NodeStore, PodStore
from qosgate.nodefit import STRATEGIES, Fit, Strategy, check_fit, protectable, score

log = logging.getLogger(__name__)

NOT_CACHED = "node is not in qosgate's node cache yet"
_NO_CLASSES: frozenset[ClassKey] = frozenset()
# Filtered pods remembered for bind (ExtenderBindingArgs carries no pod), in case our pod watch has not
# seen a pod the scheduler already has. Bounded: older entries are only a fallback.
_DEMAND_MEMO = 65536
# Expired reservations are swept lazily, at most this often (seconds of the injected clock).
_SWEEP_INTERVAL = 1.0


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


@dataclass(slots=True)
class Reservation:
    uid: str
    namespace: str
    name: str
    node: str
    memory_min: int
    classes: frozenset[ClassKey]
    deadline: float
    inflight: int = 0  # binding POSTs running for it right now: never expire under their feet
    bound: bool = False  # the API accepted the binding; waiting for the watch


@dataclass(frozen=True, slots=True)
class FilterResult:
    passed: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    unresolvable: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    """Reservations not yet visible in the pod store, summed per node (one decision's view)."""

    memory: dict[str, int] = field(default_factory=dict)
    classes: dict[str, dict[ClassKey, int]] = field(default_factory=dict)


class ExtenderState:
    """Filter/prioritize/bind decisions plus the reservations of binds in flight. Thread-safe."""

    def __init__(self, pods: PodStore, nodes: NodeStore, settings: ExtenderSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or ExtenderSettings()
        if pods.accounting != self.settings.accounting:
            # The store's totals and our per-pod figures must come from the same rule, or they disagree.
            raise ValueError(f"pod store counts {pods.accounting!r} but settings say {self.settings.accounting!r}")
        self._pods = pods
        self._nodes = nodes
        self._clock = clock
        # One lock for filter, prioritize, bind's check-and-reserve and the listener (GAS pattern).
        self._lock = threading.Lock()
        self._reservations: dict[str, dict[str, Reservation]] = {}  # pod uid → node → reservation
        self._memo: OrderedDict[str, Demand] = OrderedDict()
        self._next_sweep = 0.0
        pods.subscribe(self._on_pod_change)

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
        passed: list[str] = []
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        extra = self._extra_nodes(node_names, node_objects)
        with self._lock:
            self._sweep()
            pending = self._pending(exclude=demand.uid)
            for name in node_names:
                fit = self._fit(demand, name, pending, extra)
                if fit.ok:
                    passed.append(name)
                elif fit.unresolvable:
                    unresolvable[name] = fit.reason
                else:
                    failed[name] = fit.reason
        return FilterResult(passed=passed, failed=failed, unresolvable=unresolvable)

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
        strategy = self.settings.strategy
        percent = self.settings.protectable_percent
        scores: list[tuple[str, int]] = []
        with self._lock:
            pending = self._pending(exclude=demand.uid)
            node_memory_min = self._pods.node_memory_min
            for name in node_names:
                node = self._node(name, extra)
                if node is None:
                    scores.append((name, 0))
                    continue
                budget = protectable(node, percent)
                free_after = budget - node_memory_min(name) - pending.memory.get(name, 0) - demand.memory_min
                scores.append((name, score(free_after, budget, strategy) if free_after >= 0 else 0))
        return scores

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
                    return ""  # already bound here and counted by the store: a retried bind
                return f"pod {namespace}/{name} is already bound to node {record.node_name}"
            demand = Demand.of_record(record) if record is not None else self._memo.get(uid)
            if demand is None:
                return (f"pod {namespace}/{name} ({uid}) is not in qosgate's pod cache yet; "
                        "the scheduler will retry")
            if demand.problems:
                return f"pod {namespace}/{name} cannot be placed: {'; '.join(demand.problems)}"
            reservation: Reservation | None = None
            if not demand.trivial:
                reservation = self._reservations.get(demand.uid, {}).get(node)
                if reservation is None:
                    fit = self._fit(demand, node, self._pending(exclude=demand.uid), {})
                    if not fit.ok:
                        return f"node {node} no longer fits pod {namespace}/{name}: {fit.reason}"
                    reservation = Reservation(demand.uid, namespace, name, node, demand.memory_min,
                                              demand.classes, self._clock() + self.settings.reservation_ttl)
                    self._reservations.setdefault(demand.uid, {})[node] = reservation
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

    def _settle(self, reservation: Reservation, result: BindResult) -> None:
        reservation.inflight -= 1
        by_node = self._reservations.get(reservation.uid)
        if by_node is None or by_node.get(reservation.node) is not reservation:
            return  # the watch confirmed (or the pod ended) while we were posting: nothing left to do
        if result.bound_here:
            reservation.bound = True
            reservation.deadline = self._clock() + self.settings.reservation_ttl
            # A pod binds once: reservations on other nodes from earlier ambiguous attempts can never land.
            for other in [n for n, r in by_node.items() if r is not reservation and not r.inflight]:
                del by_node[other]
        elif result.outcome is BindOutcome.UNKNOWN:
            # The binding may have landed: keep counting until the watch or the TTL decides.
            reservation.deadline = self._clock() + self.settings.reservation_ttl
        elif not reservation.inflight and not reservation.bound:
            del by_node[reservation.node]  # definite failure: give the capacity back
        if not by_node:
            del self._reservations[reservation.uid]

    # --- the watch --------------------------------------------------------------------------------
    def _on_pod_change(self, old: PodRecord | None, new: PodRecord | None) -> None:
        """Store listener: forget reservations once the store counts the pod, or the pod is gone."""
        record = new or old
        if record is None or record.uid not in self._reservations:
            return  # cheap exit without the lock: the common case for every pod event in the cluster
        if new is not None and new.active and not new.node_name:
            return  # still pending: the reservation keeps counting
        with self._lock:
            self._drop_confirmed(record.uid, new)

    def _drop_confirmed(self, uid: str, new: PodRecord | None) -> None:
        # Bound: the store's totals count the pod now (and a pod binds once, so reservations on other
        # nodes can never land). Gone or finished: it holds nothing. Any POST still running settles
        # against a reservation that is no longer there, which is a no-op.
        if self._reservations.pop(uid, None) is not None:
            log.debug("reservation of pod %s confirmed by the watch (node %s)", uid, new.node_name if new else "-")

    def _pending(self, exclude: str) -> _Pending:
        """Sum reservations the store does not count yet, per node. Read *before* the store totals.

        Also drops reservations the listener could not (a bind that reserved just after the pod's bound
        event was delivered), so the listener is an optimisation, never a correctness requirement.
        """
        pending = _Pending()
        get = self._pods.get
        done: list[str] = []
        for uid, by_node in self._reservations.items():
            if uid == exclude:
                continue  # a pod never competes with itself (a retried pod replaces its old reservation)
            record = get(uid)
            if record is not None and (record.node_name or not record.active):
                # Bound: the store counts it (or it landed elsewhere); finished: holds nothing.
                done.append(uid)
                continue
            for node, reservation in by_node.items():
                if reservation.memory_min:
                    pending.memory[node] = pending.memory.get(node, 0) + reservation.memory_min
                if reservation.classes:
                    counts = pending.classes.setdefault(node, {})
                    for key in reservation.classes:
                        counts[key] = counts.get(key, 0) + 1
        for uid in done:
            del self._reservations[uid]
        return pending

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
        for uid in list(self._reservations):
            by_node = self._reservations[uid]
            for node in [n for n, r in by_node.items() if not r.inflight and r.deadline <= now]:
                reservation = by_node.pop(node)
                dropped += 1
                log.warning("reservation of %s/%s on %s expired without the watch confirming it (bound=%s)",
                            reservation.namespace, reservation.name, node, reservation.bound)
            if not by_node:
                del self._reservations[uid]
        return dropped

    # --- fit --------------------------------------------------------------------------------------
    def _extra_nodes(self, names: Sequence[str], objects: Sequence[Any] | None) -> dict[str, NodeRecord]:
        """Records for nodes the scheduler sent in full but our watch has not delivered yet."""
        if objects is None:
            return {}
        get = self._nodes.get
        return {name: node_record_from_raw(obj) for name, obj in zip(names, objects, strict=False)
                if isinstance(obj, dict) and get(name) is None}

    def _node(self, name: str, extra: Mapping[str, NodeRecord]) -> NodeRecord | None:
        node = self._nodes.get(name)
        return node if node is not None else extra.get(name)

    def _fit(self, demand: Demand, name: str, pending: _Pending, extra: Mapping[str, NodeRecord]) -> Fit:
        node = self._node(name, extra)
        if node is None:
            return Fit(False, NOT_CACHED)
        if node.problems:
            # Fail closed but resolvable: the admin fixes the annotation, the pod then fits.
            return Fit(False, "node's qosgate annotations cannot be read: " + "; ".join(node.problems))
        class_counts: Mapping[ClassKey, int] = {}
        if demand.classes and node.offered_classes is not None:
            class_counts = self._pods.node_class_count(name)
            reserved_classes = pending.classes.get(name)
            if reserved_classes:
                merged = dict(class_counts)
                for key, count in reserved_classes.items():
                    merged[key] = merged.get(key, 0) + count
                class_counts = merged
        return check_fit(demand.memory_min, demand.classes, node, self._pods.node_memory_min(name),
                         pending.memory.get(name, 0), class_counts, self.settings.protectable_percent)

    # --- introspection (tests, metrics, the simulator) ----------------------------------------------
    def node_usage(self, node: str) -> tuple[int, int]:
        """(memory.min the store counts as bound, memory.min reserved and not yet visible) on a node."""
        with self._lock:
            pending = self._pending(exclude="")
            return self._pods.node_memory_min(node), pending.memory.get(node, 0)

    def reservations(self) -> list[Reservation]:
        with self._lock:
            return [r for by_node in self._reservations.values() for r in by_node.values()]

    def clear(self) -> None:
        """Forget every reservation (leadership lost: the next leader rebuilds from the API)."""
        with self._lock:
            self._reservations.clear()
            self._memo.clear()

    def close(self) -> None:
        self._pods.unsubscribe(self._on_pod_change)

