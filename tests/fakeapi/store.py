"""In-memory storage with etcd-like semantics: one global revision, history, watches, snapshots.

Invariants that keep this both correct and fast:

* Stored objects are **never mutated** after they are stored. Every write stores a new dict, so
  history entries, list snapshots and in-flight watch events can share references freely
  (no deep copies on the read path — 150k pods list in milliseconds).
* Every write bumps the single global ``rv`` and appends exactly one event to ``history``;
  the watch fan-out happens under the same lock, so every watcher sees events in rv order and a
  bookmark taken under the lock is never followed by an older event.
* Objects are stored *without* ``kind``/``apiVersion`` (like list items on the wire); the HTTP
  layer adds them for single objects and watch events.
"""

from __future__ import annotations

import base64
import bisect
import gc
import itertools
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from .errors import APIError, already_exists, bad_request, expired, gone_status, not_found
from .resources import Registry, ResourceType
from .strategy import now_rfc3339

Obj = dict[str, Any]
Matcher = Callable[[Obj], bool]

BULK_FREEZE_THRESHOLD = 10_000
_EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - objects "
    "that were created, modified, or deleted between the time the first chunk was returned and now may show "
    "up in the list."
)


class Event(NamedTuple):
    rv: int
    type: str  # ADDED / MODIFIED / DELETED
    rkey: str  # ResourceType.key
    obj: Obj  # new state (for DELETED: last state stamped with the deletion rv)
    old: Obj | None  # previous state (MODIFIED/DELETED), needed for selector transitions and rollback


class CASConflict(Exception):
    # internal signal, never reaches a client as such
    """The object changed since it was read; the caller decides between retry and 409."""


def object_key(rt: ResourceType, namespace: str, name: str) -> str:
    # etcd key order: namespaced objects sort by "<ns>/<name>", which is also the list order.
    return f"{namespace}/{name}" if rt.namespaced else name


def key_of(rt: ResourceType, obj: Obj) -> str:
    meta = obj["metadata"]
    return object_key(rt, meta.get("namespace", ""), meta["name"])


@dataclass(eq=False)
class Watcher:
    rkey: str
    namespace: str | None
    matcher: Matcher | None
    min_rv: int
    queue: deque[tuple[str, Obj]] = field(default_factory=deque)
    wake: threading.Event = field(default_factory=threading.Event)
    error: Obj | None = None  # a Status to send as an ERROR event, then end (410 Gone)
    dropped: bool = False
    force_bookmark: bool = False
    conn: Any = None  # the socket, so drop_watches() can cut it

    def offer(self, ev: Event) -> None:
        """Translate a storage event for this watcher (called with the store lock held)."""
        if ev.rv <= self.min_rv:
            return
        if self.namespace is not None and ev.obj["metadata"].get("namespace") != self.namespace:
            return
        m = self.matcher
        if m is None:
            self.queue.append((ev.type, ev.obj))
        elif ev.type == "ADDED":
            if m(ev.obj):
                self.queue.append(("ADDED", ev.obj))
        elif ev.type == "DELETED":
            if m(ev.old or ev.obj):
                self.queue.append(("DELETED", ev.obj))
        else:
            # Like the watch cache: an object entering/leaving the selector is ADDED/DELETED for it.
            now_m = m(ev.obj)
            was_m = ev.old is not None and m(ev.old)
            if now_m and was_m:
                self.queue.append(("MODIFIED", ev.obj))
            elif now_m:
                self.queue.append(("ADDED", ev.obj))
            elif was_m:
                self.queue.append(("DELETED", ev.obj))
            else:
                return
        self.wake.set()


class ListResult(NamedTuple):
    items: list[Obj]
    rv: int
    continue_token: str
    remaining: int | None


class Store:
    def __init__(self, registry: Registry, history_size: int = 300_000, snapshot_cache: int = 64) -> None:
        self.registry = registry
        self.lock = threading.RLock()
        self.rv = 0
        self.floor = 0  # history holds every event with rv > floor
        self.history: deque[Event] = deque()
        self.history_size = history_size
        self.data: dict[str, dict[str, Obj]] = {}
        self.keys: dict[str, list[str]] = {}
        self.watchers: dict[str, set[Watcher]] = {}
        self._snapshots: OrderedDict[str, tuple[int, list[Obj]]] = OrderedDict()
        self._snapshot_cache = snapshot_cache
        self._snap_ids = itertools.count(1)
        self.froze_gc = False

    # ----- internals (lock held) ----------------------------------------------------------------
    def _bucket(self, rt: ResourceType) -> dict[str, Obj]:
        b = self.data.get(rt.key)
        if b is None:
            b = self.data[rt.key] = {}
            self.keys[rt.key] = []
        return b

    def _emit(self, ev: Event) -> None:
        hist = self.history
        hist.append(ev)
        if len(hist) > self.history_size:
            self.floor = hist.popleft().rv
        for w in self.watchers.get(ev.rkey, ()):
            w.offer(ev)

    @staticmethod
    def _stamp(obj: Obj, rv: int) -> Obj:
        # New top-level and metadata dicts: the caller's dicts may be shared with older versions.
        out = dict(obj)
        out["metadata"] = {**obj["metadata"], "resourceVersion": str(rv)}
        return out

    # ----- reads -------------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        with self.lock:
            return self.data.get(rt.key, {}).get(object_key(rt, namespace, name))

    def current_rv(self) -> int:
        with self.lock:
            return self.rv

    def _range(self, rt: ResourceType, namespace: str | None) -> tuple[list[str], int, int]:
        keys = self.keys.get(rt.key, [])
        if namespace is None or not rt.namespaced:
            return keys, 0, len(keys)
        return keys, bisect.bisect_left(keys, namespace + "/"), bisect.bisect_left(keys, namespace + "0")

    def _current_items(self, rt: ResourceType, namespace: str | None, matcher: Matcher | None) -> list[Obj]:
        bucket = self.data.get(rt.key, {})
        keys, lo, hi = self._range(rt, namespace)
        if matcher is None:
            return [bucket[k] for k in keys[lo:hi]]
        return [o for o in (bucket[k] for k in keys[lo:hi]) if matcher(o)]

    def _state_at(self, rt: ResourceType, rv: int) -> dict[str, Obj]:
        """Reconstruct the collection at ``rv`` by rolling history back (410 if compacted away)."""
        if rv < self.floor:
            raise expired(f"too old resource version: {rv} ({self.floor})")
        state = dict(self.data.get(rt.key, {}))
        for ev in reversed(self.history):
            if ev.rv <= rv:
                break
            if ev.rkey != rt.key:
                continue
            k = key_of(rt, ev.obj)
            if ev.type == "ADDED":
                state.pop(k, None)
            elif ev.old is not None:
                state[k] = ev.old
        return state

    def _items_at(
        self, rt: ResourceType, rv: int, namespace: str | None, matcher: Matcher | None, after: str | None = None
    ) -> list[Obj]:
        state = self._state_at(rt, rv)
        prefix = namespace + "/" if namespace is not None and rt.namespaced else ""
        out = []
        for k in sorted(state):
            if prefix and not k.startswith(prefix):
                continue
            if after is not None and k <= after:
                continue
            o = state[k]
            if matcher is None or matcher(o):
                out.append(o)
        return out

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        matcher: Matcher | None,
        *,
        limit: int = 0,
        continue_token: str = "",
        resource_version: str = "",
        rv_match: str = "",
    ) -> ListResult:
        with self.lock:
            if continue_token:
                if resource_version not in ("",):
                    raise bad_request("specifying resource version is not allowed when using continue")
                tok = _decode_token(continue_token)
                snap = self._snapshots.get(tok["id"])
                if snap is not None:
                    self._snapshots.move_to_end(tok["id"])
                    list_rv, items = snap
                    offset = tok["i"]
                else:
                    # Snapshot evicted: rebuild the list as of the token's revision (etcd would do the same).
                    list_rv = tok["rv"]
                    if list_rv < self.floor:
                        raise expired(_EXPIRED_CONTINUE)
                    items = self._items_at(rt, list_rv, namespace, matcher, after=tok["start"])
                    offset = 0
                snap_id = tok["id"]
            else:
                snap_id = ""
                offset = 0
                if rv_match == "Exact":
                    if resource_version in ("", "0"):
                        raise bad_request(
                            'resourceVersionMatch: Forbidden: resourceVersionMatch "Exact" is forbidden '
                            'for resourceVersion "0" or unset'
                        )
                    list_rv = _parse_rv(resource_version)
                    items = self._items_at(rt, list_rv, namespace, matcher)
                else:
                    if rv_match not in ("", "NotOlderThan"):
                        raise bad_request(f'resourceVersionMatch: Unsupported value: "{rv_match}"')
                    if resource_version not in ("", "0") and _parse_rv(resource_version) > self.rv:
                        raise APIError(
                            504,
                            f"Too large resource version: {resource_version}, current: {self.rv}",
                            "Timeout",
                            {
                                "causes": [
                                    {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
                                ],
                                "retryAfterSeconds": 1,
                            },
                        )
                    list_rv = self.rv
                    items = self._current_items(rt, namespace, matcher)
            remaining_total = len(items) - offset
            if limit <= 0 or remaining_total <= limit:
                return ListResult(items[offset:] if offset else items, list_rv, "", None)
            page = items[offset : offset + limit]
            if not snap_id:
                snap_id = str(next(self._snap_ids))
                self._snapshots[snap_id] = (list_rv, items)
                while len(self._snapshots) > self._snapshot_cache:
                    self._snapshots.popitem(last=False)
            token = _encode_token(list_rv, key_of(rt, page[-1]), snap_id, offset + limit)
            remaining = remaining_total - limit if matcher is None else None
            return ListResult(page, list_rv, token, remaining)

    # ----- writes ------------------------------------------------------------------------------
    def insert(self, rt: ResourceType, obj: Obj) -> Obj:
        with self.lock:
            bucket = self._bucket(rt)
            k = key_of(rt, obj)
            if k in bucket:
                raise already_exists(rt.resource, rt.group, obj["metadata"]["name"])
            self.rv += 1
            stored = self._stamp(obj, self.rv)
            bucket[k] = stored
            bisect.insort(self.keys[rt.key], k)
            self._emit(Event(self.rv, "ADDED", rt.key, stored, None))
            return stored

    def replace(self, rt: ResourceType, obj: Obj, expected_rv: str) -> Obj:
        """Compare-and-swap on resourceVersion. An unchanged object is not rewritten (no rv bump)."""
        with self.lock:
            bucket = self._bucket(rt)
            k = key_of(rt, obj)
            cur = bucket.get(k)
            if cur is None:
                raise not_found(rt.resource, rt.group, obj["metadata"]["name"])
            if cur["metadata"].get("resourceVersion") != expected_rv:
                raise CASConflict()
            if _same_ignoring_rv(cur, obj):
                return cur
            meta = obj["metadata"]
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                # the last finalizer is gone from an object being deleted: it goes away now
                return self._delete_locked(rt, k, cur, last=obj)
            self.rv += 1
            stored = self._stamp(obj, self.rv)
            bucket[k] = stored
            self._emit(Event(self.rv, "MODIFIED", rt.key, stored, cur))
            return stored

    def remove(self, rt: ResourceType, namespace: str, name: str, expected_rv: str | None) -> Obj:
        with self.lock:
            k = object_key(rt, namespace, name)
            cur = self.data.get(rt.key, {}).get(k)
            if cur is None:
                raise not_found(rt.resource, rt.group, name)
            if expected_rv is not None and cur["metadata"].get("resourceVersion") != expected_rv:
                raise CASConflict()
            return self._delete_locked(rt, k, cur)

    def _delete_locked(self, rt: ResourceType, k: str, cur: Obj, last: Obj | None = None) -> Obj:
        bucket = self.data[rt.key]
        del bucket[k]
        keys = self.keys[rt.key]
        del keys[bisect.bisect_left(keys, k)]
        self.rv += 1
        final = self._stamp(last if last is not None else cur, self.rv)
        self._emit(Event(self.rv, "DELETED", rt.key, final, cur))
        return final

    def remove_namespace_contents(self, namespace: str) -> None:
        with self.lock:
            for rt in list(self.registry.by_key.values()):
                if not rt.namespaced:
                    continue
                keys, lo, hi = self._range(rt, namespace)
                for k in list(keys[lo:hi]):
                    self._delete_locked(rt, k, self.data[rt.key][k])

    def seed(self, objs: Iterable[Obj]) -> int:
        """Bulk insert/overwrite without admission. Returns the revision after the last object.

        This is the hot path for 150k-pod fixtures, hence the hand-inlined bookkeeping.
        """
        # Cyclic GC passes over 150k fresh dicts would double the cost; nothing here makes cycles.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        before = self.rv
        try:
            return self._seed(objs)
        finally:
            if self.rv - before >= BULK_FREEZE_THRESHOLD:
                # Stored objects are immutable and acyclic: move them out of the GC's reach. Otherwise every
                # full collection walks millions of them and e.g. parsing a 5000-pod list page costs 4x more.
                gc.freeze()
                self.froze_gc = True
            if gc_was_enabled:
                gc.enable()

    def _seed(self, objs: Iterable[Obj]) -> int:
        now = now_rfc3339()
        touched: set[str] = set()
        by_gvk = self.registry.by_gvk
        history = self.history
        uid_base = fast_uuid4()[:24]
        last_gvk: tuple[str, str] | None = None
        rt: ResourceType | None = None
        bucket: dict[str, Obj] = {}
        keys: list[str] = []
        watchers: set[Watcher] = set()
        with self.lock:
            for raw in objs:
                gvk = (raw.get("apiVersion", ""), raw.get("kind", ""))
                if gvk != last_gvk:
                    rt = by_gvk.get(gvk)
                    if rt is None:
                        raise ValueError(f"seed: unknown apiVersion/kind {gvk[0]}/{gvk[1]}")
                    last_gvk = gvk
                    bucket = self._bucket(rt)
                    keys = self.keys[rt.key]
                    watchers = self.watchers.setdefault(rt.key, set())
                assert rt is not None
                obj = dict(raw)
                obj.pop("kind", None)
                obj.pop("apiVersion", None)
                meta = dict(raw.get("metadata") or ())
                name = meta.get("name")
                if not name:
                    raise ValueError("seed: every object needs metadata.name")
                if rt.namespaced:
                    ns = meta.get("namespace") or "default"
                    meta["namespace"] = ns
                    k = f"{ns}/{name}"
                else:
                    k = name
                if "uid" not in meta:
                    # Unique because rv is; random per store; still a well-formed v4 UUID string.
                    meta["uid"] = f"{uid_base}{self.rv + 1:012x}"
                if "creationTimestamp" not in meta:
                    meta["creationTimestamp"] = now
                if rt.tracks_generation and "generation" not in meta:
                    meta["generation"] = 1
                self.rv += 1
                meta["resourceVersion"] = str(self.rv)
                obj["metadata"] = meta
                old = bucket.get(k)
                bucket[k] = obj
                if old is None:
                    keys.append(k)
                    touched.add(rt.key)
                ev = Event(self.rv, "ADDED" if old is None else "MODIFIED", rt.key, obj, old)
                history.append(ev)
                if len(history) > self.history_size:
                    self.floor = history.popleft().rv
                for w in watchers:
                    w.offer(ev)
            for rk in touched:
                self.keys[rk].sort()
            return self.rv

    def compact(self) -> None:
        with self.lock:
            self.history.clear()
            self.floor = self.rv
            self._snapshots.clear()

    # ----- watches ------------------------------------------------------------------------------
    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        matcher: Matcher | None,
        resource_version: str,
        send_initial: bool | None,
    ) -> tuple[Watcher, list[Obj], int]:
        """Register a watcher. Returns (watcher, synthetic initial objects, rv they are current at)."""
        with self.lock:
            ns = namespace if rt.namespaced else None
            initial: list[Obj] = []
            if resource_version in ("", "0") or send_initial:
                w = Watcher(rt.key, ns, matcher, self.rv)
                initial = self._current_items(rt, ns, matcher)
            else:
                start = _parse_rv(resource_version)
                w = Watcher(rt.key, ns, matcher, start)
                if start < self.floor:
                    w.error = gone_status(start, self.floor)
                    return w, [], self.rv
                replay: list[Event] = []
                for ev in reversed(self.history):
                    if ev.rv <= start:
                        break
                    if ev.rkey == rt.key:
                        replay.append(ev)
                for ev in reversed(replay):
                    w.offer(ev)
            self.watchers.setdefault(rt.key, set()).add(w)
            return w, initial, self.rv

    def drain(self, w: Watcher) -> tuple[list[tuple[str, Obj]], int]:
        """Pop queued events and the revision a bookmark may claim (consistent under the lock)."""
        with self.lock:
            events = list(w.queue)
            w.queue.clear()
            return events, self.rv

    def unwatch(self, w: Watcher) -> None:
        with self.lock:
            self.watchers.get(w.rkey, set()).discard(w)

    def all_watchers(self) -> list[Watcher]:
        with self.lock:
            return [w for ws in self.watchers.values() for w in ws]


def fast_uuid4() -> str:
    """RFC 4122 version-4 UUID string."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _same_ignoring_rv(a: Obj, b: Obj) -> bool:
    if a.keys() != b.keys():
        return False
    for k, v in a.items():
        if k == "metadata":
            ma, mb = v, b[k]
            if {x: y for x, y in ma.items() if x != "resourceVersion"} != {
                x: y for x, y in mb.items() if x != "resourceVersion"
            }:
                return False
        elif v != b[k]:
            return False
    return True


def _parse_rv(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise bad_request(f'resourceVersion: Invalid value: "{text}": must be a non-negative integer') from exc
    if value < 0:
        raise bad_request(f'resourceVersion: Invalid value: "{text}": must be a non-negative integer')
    return value


def _encode_token(rv: int, start: str, snap_id: str, offset: int) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start, "id": snap_id, "i": offset})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        tok = orjson.loads(raw)
        if tok.get("v") != "meta.k8s.io/v1" or not isinstance(tok.get("rv"), int):
            raise ValueError("bad token")
        return {"rv": tok["rv"], "start": str(tok["start"]), "id": str(tok.get("id", "")), "i": int(tok.get("i", 0))}
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
        raise bad_request(f"continue key is not valid: {exc}") from exc
