"""Thread-safe in-memory stores fed by informers, with the aggregates the extender and quotas read (pure, no I/O).

Locking: every store has a data lock (`_lock`) held only while the maps change or are read, and a writer
lock (`_write_lock`) that serialises writers *and* listener notification. Listeners therefore run on the
writer's thread, after the change is visible to readers, strictly in event order and never concurrently
with one another — but without the data lock, so a listener may read the store (it sees exactly the
state right after its event) and may take its own locks without risking a lock-order inversion against
threads that hold those locks while reading the store. Listeners must stay cheap: the watch waits for them.

Aggregates are maintained incrementally (old record subtracted, new one added), so every read below is a
dictionary lookup however many pods the cluster runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from qosgate.core.records import (
    NodeRecord,
    PodRecord,
    node_record_from_raw,
    object_uid,
    pod_record_from_raw,
)
from qosgate.core.types import Accounting, ClassKey

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
EVENT_TYPES = frozenset({ADDED, MODIFIED, DELETED})

R = TypeVar("R")
Listener = Callable[[R | None, R | None], None]


@dataclass(slots=True, frozen=True)
class ClassUsage:
    pods: int  # pod-level assignments of the class
    containers: int  # container-level assignments of the class
    memory_min: int  # a pod's whole memory_min, once per distinct class it uses


def _resource_version(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    rv = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return rv if isinstance(rv, str) else ""


class _Store(Generic[R]):
    """Keyed records plus the replace/apply/notify protocol the Informer drives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Re-entrant so a listener that (unwisely) writes to the store it listens to cannot deadlock itself.
        self._write_lock = threading.RLock()
        self._items: dict[str, R] = {}
        self._listeners: list[Listener[R]] = []
        self._resource_version = ""
        self._synced = False

    # --- what subclasses define -------------------------------------------------------------------
    def _convert(self, obj: Mapping[str, Any]) -> R:
        raise NotImplementedError

    def _key_of_raw(self, obj: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def _key(self, record: R) -> str:
        raise NotImplementedError

    def _index(self, record: R) -> None:
        """Add a record to the secondary indexes and aggregates (data lock held)."""

    def _unindex(self, record: R) -> None:
        """Remove a record from the secondary indexes and aggregates (data lock held)."""

    def _equal(self, old: R, new: R) -> bool:
        return old == new

    # --- the informer protocol --------------------------------------------------------------------
    def replace(self, objs: Iterable[Mapping[str, Any]], resource_version: str) -> None:
        """Swap in a fresh LIST. Listeners hear only real differences from what the store held.

        `objs` may be a lazy iterable (the informer passes pages as they arrive); it is consumed before the
        store changes, so an error half-way through leaves the store exactly as it was.
        """
        fresh: dict[str, R] = {}
        for obj in objs:
            record = self._convert(obj)
            fresh[self._key(record)] = record
        changes: list[tuple[R | None, R | None]] = []
        with self._write_lock:
            with self._lock:
                # Removals first, so a name freed by a deleted object is free before its successor arrives.
                for key in [k for k in self._items if k not in fresh]:
                    old = self._items.pop(key)
                    self._unindex(old)
                    changes.append((old, None))
                for key, record in fresh.items():
                    previous = self._items.get(key)
                    if previous is None:
                        self._items[key] = record
                        self._index(record)
                        changes.append((None, record))
                    elif not self._equal(previous, record):
                        self._unindex(previous)
                        self._items[key] = record
                        self._index(record)
                        changes.append((previous, record))
                    # Equal: keep the old object; the fresh copy is dropped, keeping memory flat across relists.
                self._resource_version = resource_version
                self._synced = True
            del fresh
            self._notify(changes)

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """Apply one watch event. ADDED of a known object updates it; DELETED of an unknown one is a no-op."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        record = self._convert(obj) if event_type != DELETED else None
        key = self._key(record) if record is not None else self._key_of_raw(obj)
        rv = _resource_version(obj)
        change: tuple[R | None, R | None] | None = None
        with self._write_lock:
            with self._lock:
                old = self._items.get(key)
                if record is None:
                    if old is not None:
                        del self._items[key]
                        self._unindex(old)
                        change = (old, None)
                elif old is None:
                    self._items[key] = record
                    self._index(record)
                    change = (None, record)
                elif not self._equal(old, record):
                    self._unindex(old)
                    self._items[key] = record
                    self._index(record)
                    change = (old, record)
                if rv:
                    self._resource_version = rv
            if change is not None:
                self._notify([change])

    def subscribe(self, fn: Listener[R]) -> None:
        """Call fn(old, new) after each real change: (None, new) added, (old, None) removed.

        Runs on the writer's thread with the writer lock held and the data lock released (see module doc).
        An exception in a listener is logged and does not stop the others or the watch.
        """
        with self._write_lock:
            self._listeners = [*self._listeners, fn]

    def unsubscribe(self, fn: Listener[R]) -> None:
        with self._write_lock:
            self._listeners = [f for f in self._listeners if f is not fn]

    def _notify(self, changes: list[tuple[R | None, R | None]]) -> None:
        listeners = self._listeners
        if not listeners:
            return
        for old, new in changes:
            for fn in listeners:
                try:
                    fn(old, new)
                except Exception:
                    log.exception("store listener %r failed on %r -> %r", fn, old, new)

    # --- state ------------------------------------------------------------------------------------
    @property
    def resource_version(self) -> str:
        with self._lock:
            return self._resource_version

    @resource_version.setter
    def resource_version(self, value: str) -> None:
        """Bookmarks move the version on without any object changing."""
        with self._lock:
            self._resource_version = value

    @property
    def synced(self) -> bool:
        with self._lock:
            return self._synced

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def records(self) -> list[R]:
        with self._lock:
            return list(self._items.values())


class PodStore(_Store[PodRecord]):
    """Pods by UID, with per-node and per-namespace views, and quota usage per namespace over *active* pods.

    Per-node memory.min and class totals are not kept here: their one incremental home is the extender's
    NodeTally (qosgate.core.nodetally), which also counts reservations. `node_memory_min` and
    `node_class_count` sum the node's pods on demand (tests and tools).
    """

    def __init__(self, accounting: Accounting = "annotated") -> None:
        super().__init__()
        if accounting not in ("annotated", "kubelet"):
            raise ValueError(f"accounting must be 'annotated' or 'kubelet', not {accounting!r}")
        self.accounting: Accounting = accounting
        self._by_name: dict[str, dict[str, PodRecord]] = {}  # namespace → name → record
        self._by_node: dict[str, dict[str, PodRecord]] = {}  # node → uid → record (bound pods, any phase)
        # namespace → class → [pods, containers, memory_min]; lists so an update adds in place.
        self._ns_usage: dict[str, dict[ClassKey, list[int]]] = {}

    def _convert(self, obj: Mapping[str, Any]) -> PodRecord:
        return pod_record_from_raw(obj, self.accounting)

    def _key_of_raw(self, obj: Mapping[str, Any]) -> str:
        return object_uid(obj)

    def _key(self, record: PodRecord) -> str:
        return record.uid

    # The index and aggregate updates below avoid setdefault(key, {}) on purpose: it would allocate a fresh
    # default on every call, and these run for every pod of every LIST and watch event.
    def _index(self, record: PodRecord) -> None:
        names = self._by_name.get(record.namespace)
        if names is None:
            names = self._by_name[record.namespace] = {}
        names[record.name] = record
        if record.node_name:
            pods = self._by_node.get(record.node_name)
            if pods is None:
                pods = self._by_node[record.node_name] = {}
            pods[record.uid] = record
        if record.active:
            self._aggregate(record, 1)

    def _unindex(self, record: PodRecord) -> None:
        names = self._by_name.get(record.namespace)
        # Only drop the name if it still points at this pod (a successor with the same name may own it).
        if names is not None and names.get(record.name) is record:
            del names[record.name]
            if not names:
                del self._by_name[record.namespace]
        if record.node_name:
            pods = self._by_node.get(record.node_name)
            if pods is not None:
                pods.pop(record.uid, None)
                if not pods:
                    del self._by_node[record.node_name]
        if record.active:
            self._aggregate(record, -1)

    def _aggregate(self, record: PodRecord, sign: int) -> None:
        classes = record.classes
        if classes:
            usage = self._ns_usage.get(record.namespace)
            if usage is None:
                usage = self._ns_usage[record.namespace] = {}
            memory = sign * record.memory_min
            for key in classes:
                totals = usage.get(key)
                if totals is None:
                    totals = usage[key] = [0, 0, 0]
                # A class in `classes` is in pod_classes or container_classes, so an added pod never
                # leaves all three at zero; all zero therefore means the last user left.
                totals[0] += sign * record.pod_classes.count(key)
                totals[1] += sign * record.container_classes.count(key)
                totals[2] += memory
                if not (totals[0] or totals[1] or totals[2]):
                    del usage[key]
            if not usage:
                del self._ns_usage[record.namespace]

    # --- reads ------------------------------------------------------------------------------------
    def get(self, uid: str) -> PodRecord | None:
        with self._lock:
            return self._items.get(uid)

    def get_by_name(self, namespace: str, name: str) -> PodRecord | None:
        with self._lock:
            return self._by_name.get(namespace, {}).get(name)

    def on_node(self, node: str) -> list[PodRecord]:
        """Every pod bound to the node, finished ones included (filter on `.active`)."""
        with self._lock:
            return list(self._by_node.get(node, {}).values())

    def in_namespace(self, namespace: str) -> list[PodRecord]:
        with self._lock:
            return list(self._by_name.get(namespace, {}).values())

    def namespaces(self) -> list[str]:
        with self._lock:
            return list(self._by_name)

    def node_memory_min(self, node: str) -> int:
        """Sum of memory_min of active pods bound to the node (architecture §5.1), summed now."""
        with self._lock:
            return sum(r.memory_min for r in self._by_node.get(node, {}).values() if r.active)

    def node_class_count(self, node: str) -> Mapping[ClassKey, int]:
        """Active pods on the node per distinct (resource, class) they use, counted now."""
        counts: dict[ClassKey, int] = {}
        with self._lock:
            for record in self._by_node.get(node, {}).values():
                if record.active:
                    for key in record.classes:
                        counts[key] = counts.get(key, 0) + 1
        return counts

    def namespace_usage(self, namespace: str) -> Mapping[ClassKey, ClassUsage]:
        """Quota usage of active pods in the namespace, bound or not (architecture §4.1.3). A copy: safe to keep."""
        with self._lock:
            usage = self._ns_usage.get(namespace, {})
            return {key: ClassUsage(*counts) for key, counts in usage.items()}


class NodeStore(_Store[NodeRecord]):
    """Nodes by name."""

    def _convert(self, obj: Mapping[str, Any]) -> NodeRecord:
        return node_record_from_raw(obj)

    def _key_of_raw(self, obj: Mapping[str, Any]) -> str:
        metadata = obj.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        return name if isinstance(name, str) else ""

    def _key(self, record: NodeRecord) -> str:
        return record.name

    def get(self, name: str) -> NodeRecord | None:
        with self._lock:
            return self._items.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._items)


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    found = obj.get("metadata")
    return found if isinstance(found, dict) else {}


def _slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Keep what readers of a raw object need; managedFields alone can be larger than the data."""
    metadata = _metadata(obj)
    kept = {k: metadata[k] for k in ("name", "namespace", "uid", "resourceVersion", "labels", "annotations",
                                     "generation", "creationTimestamp", "deletionTimestamp") if k in metadata}
    slim = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    slim["metadata"] = kept
    return slim


class ObjectStore(_Store[dict[str, Any]]):
    """Raw objects (e.g. quota ConfigMaps) by namespace/name, for small collections read as-is."""

    def _convert(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return _slim(obj)

    def _key_of_raw(self, obj: Mapping[str, Any]) -> str:
        metadata = _metadata(obj)
        return f"{metadata.get('namespace') or ''}/{metadata.get('name') or ''}"

    def _key(self, record: dict[str, Any]) -> str:
        return self._key_of_raw(record)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object; treat it as read-only (it is shared with every reader)."""
        with self._lock:
            return self._items.get(f"{namespace}/{name}")

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        prefix = f"{namespace}/"
        with self._lock:
            return [obj for key, obj in self._items.items() if key.startswith(prefix)]
