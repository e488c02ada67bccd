"""List + watch informers feeding the stores, with raw JSON throughout (no client model objects).

Each Informer runs one daemon thread:

    LIST (paginated with limit/continue) ─► store.replace(items, list RV)
      └► WATCH ?resourceVersion=RV&allowWatchBookmarks=true, one JSON event per line
           ADDED/MODIFIED/DELETED ─► store.apply, RV := object RV
           BOOKMARK               ─► RV := bookmark RV (nothing else changes)
           ERROR 410 / HTTP 410   ─► relist (the server forgot RV; the diff in replace() tells listeners
                                     exactly what changed in the gap, so no event is silently lost)
           server timeout / EOF   ─► re-watch from RV at once (a normal end of a watch)
           reset / read timeout / garbage ─► re-watch from RV after capped, jittered exponential backoff

An event is applied only after its whole line arrived, and the RV only moves with applied events or
bookmarks, so a connection dropped mid-line simply replays from the last applied event.
"""

from __future__ import annotations

import contextlib
import gc
import http.client
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import orjson
import urllib3

from qosgate.core.annotations import NODE_REPORT_LABEL, QUOTA_LABEL, SYSTEM_NAMESPACE
from qosgate.core.types import Accounting
from qosgate.kube.rest import ApiError, KubeError, TransportError, open_request, request_json
from qosgate.kube.store import NodeStore, ObjectStore, PodStore
from qosgate.kube.transport import KubeClient

log = logging.getLogger(__name__)

# Errors a dropped or broken watch stream can raise while we read it.
_STREAM_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError)


class InformerStore(Protocol):
    def replace(self, objs: Any, resource_version: str) -> None: ...

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None: ...

    @property
    def resource_version(self) -> str: ...

    @resource_version.setter
    def resource_version(self, value: str) -> None: ...

    @property
    def synced(self) -> bool: ...


class _GcPause:
    """Process-wide pause of the cyclic garbage collector while any LIST is being decoded.

    A LIST decodes hundreds of thousands of short-lived, acyclic JSON objects; reference counting frees
    them, but each batch that survives a young collection pushes the collector into full scans of the
    whole (growing) heap, roughly once per page. Measured at 150,000 pods this doubled the decode time.
    Counted so overlapping lists (pods, nodes, config maps) resume collection only when the last ends,
    and never re-enabled if the application had disabled it.

    When the last list ends, the C heap's free pages go back to the OS (`_trim_c_heap`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                _trim_c_heap()
                if self._was_enabled:
                    gc.enable()


_gc_pause = _GcPause()


def _trim_c_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc `malloc_trim`; elsewhere nothing happens).

    A LIST's response bodies are large buffers from the C heap; glibc keeps the freed space mapped (~5 MB
    after a sync of 150,000 pods) unless asked.
    """
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def gc_paused() -> _GcPause:
    return _gc_pause


class _Gone(Exception):
    """The server no longer has our resourceVersion (or continue token): only a fresh LIST helps."""


class Backoff:
    """Capped exponential backoff with full jitter, so many replicas reconnecting after an apiserver
    restart spread out instead of arriving together."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None):
        self.initial = initial
        self.maximum = maximum
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        # Half fixed, half random: never a near-zero delay that would hammer a struggling server.
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self._attempt = 0


def _default_store(path: str) -> InformerStore:
    if path.endswith("/pods"):
        return PodStore()
    if path.endswith("/nodes"):
        return NodeStore()
    return ObjectStore()


def _metadata(obj: object) -> Mapping[str, Any]:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    return metadata if isinstance(metadata, dict) else {}


class Informer:
    """Keeps `store` equal to the API server's view of `path` (a collection URL such as /api/v1/pods)."""

    def __init__(
        self,
        api_client: KubeClient,
        path: str = "/api/v1/pods",
        store: InformerStore | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        name: str = "pods",
        *,
        watch_timeout: float = 300.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 30.0,
        relist_after_failures: int = 5,
        request_timeout: float = 60.0,
        pause_gc_during_list: bool = True,
    ):
        self.api_client = api_client
        self.path = path
        self.store: InformerStore = store if store is not None else _default_store(path)
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.name = name
        self.watch_timeout = watch_timeout
        self.relist_after_failures = relist_after_failures
        self.request_timeout = request_timeout
        self.pause_gc_during_list = pause_gc_during_list
        self._backoff = Backoff(backoff_initial, backoff_max)

        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._response_lock = threading.Lock()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._resource_version = ""
        self._unpaginated_next = False

        # Counters for metrics; written only by the informer thread.
        self.events = 0
        self.bookmarks = 0
        self.lists = 0
        self.relists = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.last_sync_seconds: float | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"informer {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop promptly: the open watch socket is shut down so a blocked read returns at once."""
        self._stop.set()
        self._interrupt()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    @property
    def resource_version(self) -> str:
        return self._resource_version

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, object]:
        return {"events": self.events, "bookmarks": self.bookmarks, "lists": self.lists, "relists": self.relists,
                "reconnects": self.reconnects, "synced": self.has_synced, "last_error": self.last_error,
                "resource_version": self._resource_version}

    def _interrupt(self) -> None:
        with self._response_lock:
            response = self._response
        if response is None:
            return
        try:
            response.shutdown()
        except (ValueError, RuntimeError, OSError, AttributeError):
            # Already released or never had a socket: closing is the best we can do.
            with contextlib.suppress(*_STREAM_ERRORS):
                response.close()

    # --- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        need_list = True
        failures = 0
        gone_in_a_row = 0
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                    failures = 0
                opened = time.monotonic()
                if self._watch() or time.monotonic() - opened >= self.watch_timeout / 2:
                    failures = gone_in_a_row = 0
                    self._backoff.reset()
                    continue  # the watch ended normally (server timeout): re-watch at once
                if self._stop.is_set():
                    break
                # Closed at once with nothing delivered: treat like a failure, or we would spin on the server.
                self.last_error = "watch closed by the server without delivering anything"
                failures += 1
            except _Gone as exc:
                log.info("informer %s: %s; relisting", self.name, exc)
                self.last_error = str(exc)
                need_list = True
                gone_in_a_row += 1
                if gone_in_a_row == 1:
                    continue  # the usual case: relist at once
                # Expired again right after a relist: the server compacts faster than we list; do not spin.
            except KubeError as exc:
                self.last_error = str(exc)
                failures += 1
            except Exception as exc:
                # A bug in a store or converter: the store may be out of step, so start over from a LIST.
                log.exception("informer %s: unexpected error", self.name)
                self.last_error = f"{type(exc).__name__}: {exc}"
                failures += 1
                need_list = True
            if self._stop.is_set():
                break
            if failures >= self.relist_after_failures:
                need_list = True
            self.reconnects += 1
            delay = self._backoff.next_delay()
            log.warning("informer %s: %s; retrying in %.2fs", self.name, self.last_error, delay)
            self._stop.wait(delay)

    def _selector_query(self) -> list[tuple[str, str]]:
        query = []
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        return query

    def _get_page(self, continue_token: str | None, paginate: bool) -> dict[str, Any]:
        query = self._selector_query()
        if paginate and self.page_size > 0:
            query.append(("limit", str(self.page_size)))
        if continue_token:
            query.append(("continue", continue_token))
        try:
            return request_json(self.api_client, "GET", self.path, query=query,
                                timeout=(5.0, self.request_timeout))
        except ApiError as exc:
            if exc.gone:
                if continue_token:
                    # The snapshot behind the continue token was compacted: like client-go, fall back to one
                    # unpaginated LIST next time rather than chase a moving target page by page.
                    self._unpaginated_next = True
                raise _Gone(f"list: {exc}") from exc
            raise

    def list_once(self) -> None:
        """One paged LIST into the store, no watch: a consistent snapshot for a tool (raises KubeError)."""
        self._list()

    def _list(self) -> None:
        started = time.monotonic()
        paginate = not self._unpaginated_next
        self._unpaginated_next = False
        pause = gc_paused() if self.pause_gc_during_list else contextlib.nullcontext()
        with pause, ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"list-{self.name}") as prefetch:
            first = self._get_page(None, paginate)
            resource_version = str(_metadata(first).get("resourceVersion") or "")

            def items(page: dict[str, Any] | None) -> Iterator[Mapping[str, Any]]:
                while page is not None:
                    token = _metadata(page).get("continue")
                    # Ask for the next page before converting this one: the server and the socket work while
                    # we compute, instead of each side waiting for the other.
                    upcoming = prefetch.submit(self._get_page, token, paginate) if token else None
                    found = page.get("items") or []
                    page = None  # at most two pages alive: the one being converted and the one arriving
                    if isinstance(found, list):
                        # Each object is dropped from the page as it is handed over, so its memory is reused
                        # by the records that follow instead of being left as holes between them (measured:
                        # ~5 MB less RSS after a sync of 150,000 pods).
                        for index, obj in enumerate(found):
                            found[index] = None
                            yield obj
                    else:
                        yield from found
                    if upcoming is not None:
                        if self._stop.is_set():
                            raise TransportError("stopped during list")
                        page = upcoming.result()

            # replace() consumes every page before touching the store, so a failure half-way changes nothing.
            self.store.replace(items(first), resource_version)
            del first
        self._resource_version = resource_version
        self.lists += 1
        if self.lists > 1:
            self.relists += 1
        self.last_sync_seconds = time.monotonic() - started
        self._synced.set()

    def _watch(self) -> bool:
        """Watch from the current RV until the stream ends. True if it delivered anything (healthy)."""
        timeout_seconds = int(self.watch_timeout * (1 + random.random()))
        query = [*self._selector_query(), ("watch", "true"), ("allowWatchBookmarks", "true"),
                 ("resourceVersion", self._resource_version), ("timeoutSeconds", str(timeout_seconds))]
        try:
            response = open_request(self.api_client, "GET", self.path, query=query,
                                    timeout=(5.0, timeout_seconds + 30.0))
        except ApiError as exc:
            if exc.gone:
                raise _Gone(f"watch: {exc}") from exc
            raise
        with self._response_lock:
            self._response = response
        delivered = False
        try:
            if self._stop.is_set():
                return False
            buffer = b""
            while not self._stop.is_set():
                try:
                    chunk = response.read1(65536)
                except _STREAM_ERRORS as exc:
                    if self._stop.is_set():
                        return delivered
                    raise TransportError(f"watch stream broke: {exc}") from exc
                if not chunk:
                    # EOF: a normal end (timeoutSeconds) unless it cut a line in half.
                    if buffer.strip() and not self._stop.is_set():
                        raise TransportError("watch stream ended in the middle of an event")
                    return delivered
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._handle_line(line)
                        delivered = True
            return delivered
        finally:
            with self._response_lock:
                self._response = None
            # Close rather than return to the pool: a watch cut short leaves unread bytes on the socket,
            # which the next request on a pooled connection would read as its own answer.
            with contextlib.suppress(*_STREAM_ERRORS):
                response.close()
                response.release_conn()

    def _handle_line(self, line: bytes) -> None:
        try:
            event = orjson.loads(line)
            event_type = event["type"]
            obj = event["object"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise TransportError(f"unreadable watch event ({exc}): {line[:200]!r}") from exc
        if event_type in ("ADDED", "MODIFIED", "DELETED"):
            self.store.apply(event_type, obj)
            rv = _metadata(obj).get("resourceVersion")
            if isinstance(rv, str) and rv:
                self._resource_version = rv
            self.events += 1
        elif event_type == "BOOKMARK":
            rv = _metadata(obj).get("resourceVersion")
            if isinstance(rv, str) and rv:
                self._resource_version = rv
                self.store.resource_version = rv
            self.bookmarks += 1
        elif event_type == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            message = obj.get("message", "") if isinstance(obj, dict) else str(obj)
            if code == 410:
                raise _Gone(f"watch: 410 {message}")
            raise ApiError(code if isinstance(code, int) else 500,
                           str(obj.get("reason", "")) if isinstance(obj, dict) else "", str(message),
                           obj if isinstance(obj, dict) else None)
        else:
            raise TransportError(f"unknown watch event type {event_type!r}")


class ClusterCache:
    """The informers qosgate needs, started and stopped together; `ready` once all have listed."""

    def __init__(
        self,
        api_client: KubeClient,
        accounting: Accounting = "annotated",
        watch_nodes: bool = True,
        watch_quota_configmaps: bool = False,
        watch_node_reports: bool = False,
        *,
        page_size: int = 500,
        pod_field_selector: str | None = None,
        **informer_options: Any,
    ):
        self.pods = PodStore(accounting)
        self.nodes = NodeStore()
        self.quota_configmaps = ObjectStore()
        self.node_reports = ObjectStore()  # the node agent's report Leases (architecture §5.3)
        self.pod_informer = Informer(api_client, "/api/v1/pods", self.pods, field_selector=pod_field_selector,
                                     page_size=page_size, name="pods", **informer_options)
        self.informers = [self.pod_informer]
        self.node_informer: Informer | None = None
        self.configmap_informer: Informer | None = None
        if watch_nodes:
            self.node_informer = Informer(api_client, "/api/v1/nodes", self.nodes, page_size=page_size,
                                          name="nodes", **informer_options)
            self.informers.append(self.node_informer)
        if watch_quota_configmaps:
            self.configmap_informer = Informer(api_client, "/api/v1/configmaps", self.quota_configmaps,
                                               label_selector=f"{QUOTA_LABEL}=true", page_size=page_size,
                                               name="quota-configmaps", **informer_options)
            self.informers.append(self.configmap_informer)
        if watch_node_reports:
            self.informers.append(Informer(
                api_client, f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NAMESPACE}/leases", self.node_reports,
                label_selector=f"{NODE_REPORT_LABEL}=true", page_size=page_size, name="node-reports",
                **informer_options))

    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    def stop(self) -> None:
        # Interrupt every watch first, then join: stopping is as slow as the slowest one, not their sum.
        for informer in self.informers:
            informer._stop.set()
            informer._interrupt()
        for informer in self.informers:
            informer.stop()

    @property
    def ready(self) -> bool:
        return all(informer.has_synced for informer in self.informers)

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for informer in self.informers:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not informer.wait_for_sync(remaining):
                return False
        return True

    def stats(self) -> dict[str, dict[str, object]]:
        return {informer.name: informer.stats() for informer in self.informers}

    def __enter__(self) -> ClusterCache:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
