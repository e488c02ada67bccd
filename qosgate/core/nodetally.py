"""Per-node memory.min and QoS-class slots: bound pods plus reservations of binds in flight (pure, no I/O).

The extender's one source of "how full is this node". Two kinds of entries:
- counted pods: active pods the watch shows bound, with memory.min or classes (others add nothing);
- reservations: pods our bind accepted that the watch does not show bound yet.

`observe(uid, record)` moves a pod from the second kind to the first in one step — its reservation stops
counting in the very call where the bound pod starts — which is why the extender mirrors the pod store
here instead of adding the store's own totals to a separate reservation table: two structures updated
at two moments can only be exact up to the gap between those moments.

Every update is "set this pod's entry", never "add a delta", so replaying an event is harmless.
Not thread-safe: ExtenderState calls it under its lock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from qosgate.core.types import ClassKey

_NO_CLASSES: frozenset[ClassKey] = frozenset()


@dataclass(slots=True)
class BindReservation:
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
class _Entry:
    node: str
    memory_min: int
    classes: frozenset[ClassKey]


def _add(totals: dict[str, int], node: str, amount: int) -> None:
    value = totals.get(node, 0) + amount
    if value:
        totals[node] = value
    else:
        totals.pop(node, None)


def _add_classes(totals: dict[str, dict[ClassKey, int]], node: str, classes: frozenset[ClassKey],
                 sign: int) -> None:
    counts = totals.setdefault(node, {})
    for key in classes:
        value = counts.get(key, 0) + sign
        if value:
            counts[key] = value
        else:
            counts.pop(key, None)
    if not counts:
        del totals[node]


class NodeTally:
    def __init__(self) -> None:
        self._counted: dict[str, _Entry] = {}  # uid → what the bound pod adds to its node
        self.bound_memory: dict[str, int] = {}  # node → summed memory.min of counted pods
        self.bound_classes: dict[str, dict[ClassKey, int]] = {}  # node → class → counted pods using it
        self._reservations: dict[str, dict[str, BindReservation]] = {}  # uid → node → reservation
        self.reserved_memory: dict[str, int] = {}
        self.reserved_classes: dict[str, dict[ClassKey, int]] = {}
        # bound + reserved per node in one dict.
        self.used_memory_by_node: dict[str, int] = {}
        # Protectable bytes of the nodes that can take pods (set by the state from the node watch), and
        # protectable − used for each of them: the filter's and prioritize's per-node loops read only these.
        self.budget: dict[str, int] = {}
        self.free_memory: dict[str, int] = {}
        # What the kernel already protects under kubepods per node (the node agent's report): used counts as at
        # least this, so protection the extender did not grant is counted too (architecture §5.3).
        self.floor: dict[str, int] = {}
        # bound + reserved slots per class, then per node: a pod's classes are looked up once per call.
        self.used_slots_by_class: dict[ClassKey, dict[str, int]] = {}

    # --- nodes ------------------------------------------------------------------------------------------
    def set_budget(self, node: str, budget: int | None) -> None:
        """The node's protectable bytes; None when it cannot take pods that ask something (gone, unreadable)."""
        if budget is None:
            self.budget.pop(node, None)
            self.free_memory.pop(node, None)
        else:
            self.budget[node] = budget
            self._refresh(node)

    def set_floor(self, node: str, floor: int) -> None:
        if floor > 0:
            self.floor[node] = floor
        else:
            self.floor.pop(node, None)
        if node in self.budget:
            self._refresh(node)

    def _refresh(self, node: str) -> None:
        self.free_memory[node] = self.budget[node] - max(self.used_memory_by_node.get(node, 0),
                                                         self.floor.get(node, 0))

    def _use(self, node: str, amount: int) -> None:
        _add(self.used_memory_by_node, node, amount)
        if node in self.budget:
            self._refresh(node)

    # --- bound pods (from the watch) -------------------------------------------------------------------
    def set_pod(self, uid: str, node: str, memory_min: int, classes: frozenset[ClassKey]) -> None:
        """The pod counts `memory_min`/`classes` on `node` ("" or nothing asked = it counts nowhere)."""
        old = self._counted.pop(uid, None)
        if old is not None:
            _add(self.bound_memory, old.node, -old.memory_min)
            self._use(old.node, -old.memory_min)
            if old.classes:
                _add_classes(self.bound_classes, old.node, old.classes, -1)
                self._add_slots(old.node, old.classes, -1)
        if node and (memory_min or classes):
            entry = _Entry(node, memory_min, classes or _NO_CLASSES)
            self._counted[uid] = entry
            _add(self.bound_memory, node, memory_min)
            self._use(node, memory_min)
            if classes:
                _add_classes(self.bound_classes, node, entry.classes, 1)
                self._add_slots(node, entry.classes, 1)

    def observe(self, uid: str, node: str, active: bool, memory_min: int, classes: frozenset[ClassKey],
                exists: bool = True) -> None:
        """Apply the watch's current view of one pod; a pod bound, finished or gone ends its reservations."""
        counts = exists and active and bool(node)
        self.set_pod(uid, node if counts else "", memory_min, classes)
        if not exists or not active or node:
            self.release_all(uid)

    def is_counted(self, uid: str) -> bool:
        return uid in self._counted

    # --- reservations ----------------------------------------------------------------------------------
    def reserve(self, reservation: BindReservation) -> None:
        self.release(reservation.uid, reservation.node)
        self._reservations.setdefault(reservation.uid, {})[reservation.node] = reservation
        _add(self.reserved_memory, reservation.node, reservation.memory_min)
        self._use(reservation.node, reservation.memory_min)
        if reservation.classes:
            _add_classes(self.reserved_classes, reservation.node, reservation.classes, 1)
            self._add_slots(reservation.node, reservation.classes, 1)

    def reservation(self, uid: str, node: str) -> BindReservation | None:
        return self._reservations.get(uid, {}).get(node)

    def reservations_of(self, uid: str) -> Mapping[str, BindReservation]:
        return self._reservations.get(uid, {})

    def has_reservations(self, uid: str) -> bool:
        return uid in self._reservations

    def release(self, uid: str, node: str) -> BindReservation | None:
        by_node = self._reservations.get(uid)
        if by_node is None or node not in by_node:
            return None
        reservation = by_node.pop(node)
        if not by_node:
            del self._reservations[uid]
        _add(self.reserved_memory, node, -reservation.memory_min)
        self._use(node, -reservation.memory_min)
        if reservation.classes:
            _add_classes(self.reserved_classes, node, reservation.classes, -1)
            self._add_slots(node, reservation.classes, -1)
        return reservation

    def _add_slots(self, node: str, classes: frozenset[ClassKey], sign: int) -> None:
        for key in classes:
            _add(self.used_slots_by_class.setdefault(key, {}), node, sign)
            if not self.used_slots_by_class[key]:
                del self.used_slots_by_class[key]

    def release_all(self, uid: str) -> None:
        for node in list(self._reservations.get(uid, ())):
            self.release(uid, node)

    def __iter__(self) -> Iterator[BindReservation]:
        for by_node in list(self._reservations.values()):
            yield from list(by_node.values())

    def __len__(self) -> int:
        return sum(len(by_node) for by_node in self._reservations.values())

    def clear_reservations(self) -> None:
        self._reservations.clear()
        self.reserved_memory.clear()
        self.reserved_classes.clear()
        self.used_memory_by_node = dict(self.bound_memory)
        for node in self.budget:
            self._refresh(node)
        self.used_slots_by_class = {}
        for node, counts in self.bound_classes.items():
            for key, count in counts.items():
                self.used_slots_by_class.setdefault(key, {})[node] = count

    # --- reads -----------------------------------------------------------------------------------------
    def used_memory(self, node: str, exclude_uid: str = "") -> int:
        """Bound + reserved memory.min on the node, leaving out `exclude_uid`'s own reservation there."""
        used = self.used_memory_by_node.get(node, 0)
        if exclude_uid:
            own = self._reservations.get(exclude_uid, {}).get(node)
            if own is not None:
                used -= own.memory_min
        return used

    def class_count(self, node: str, key: ClassKey, exclude_uid: str = "") -> int:
        """Bound + reserved slots of one class on the node (cheaper than class_counts for one key)."""
        count = self.used_slots_by_class.get(key, {}).get(node, 0)
        if exclude_uid:
            own = self._reservations.get(exclude_uid, {}).get(node)
            if own is not None and key in own.classes:
                count -= 1
        return count

    def class_counts(self, node: str, exclude_uid: str = "") -> dict[ClassKey, int]:
        """Bound + reserved slots per class on the node, leaving out `exclude_uid`'s own reservation."""
        counts = dict(self.bound_classes.get(node, {}))
        for key, value in self.reserved_classes.get(node, {}).items():
            counts[key] = counts.get(key, 0) + value
        if exclude_uid:
            own = self._reservations.get(exclude_uid, {}).get(node)
            if own is not None:
                for key in own.classes:
                    counts[key] -= 1
        return counts
