"""`qosgate simulate`: drive a qosgate extender over HTTPS the way kube-scheduler does, against an API server.

What kube-scheduler does, and so what this does (DESIGN §7):
- one pod at a time: POST /filter (the NodeNames form, nodeCacheCapable: true) → POST /prioritize on the
  nodes that passed → pick the best score (ties broken at random, like selectHost) → *assume* and move on;
- the binding runs asynchronously (a pool of binds in flight) through POST /bind, so the next pods are
  filtered before earlier bindings are visible — exactly the window the extender's reservations cover;
- a failed bind forgets the assumed pod and requeues it (unless the API shows it bound after all); pods no
  node accepts are parked as unschedulable and retried when capacity may have been freed (a failed bind,
  a restart of the extender), like the scheduler's unschedulable queue on cluster events.

Fault injection: random bind delays (which also reorders binds), the scheduler giving up on a bind whose
answer it did not wait for (`bind_timeout_rate`, the binding may still land), duplicated binds (a retry
after a lost answer), and — with the in-process extender — a binder that fails outright or lands and then
reports a timeout (`FlakyBinder`).

The report: pods placed, unschedulable pods with the extender's reasons, pods/s, and two checks against
the API's final state: no node's summed memory.min exceeds its protectable memory, and no pod left
unschedulable would fit a node now.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import random
import re
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from qosgate.core.annotations import CARRIER_POD, MEMORY_MIN
from qosgate.core.errors import InvalidError
from qosgate.core.nodefit import check_fit, protectable
from qosgate.core.quantity import format_bytes, parse_quantity
from qosgate.core.records import ClassKey, node_record_from_raw, pod_record_from_raw

MI = 2**20
MANAGED_BY = "qosgate-simulate"
SIM_SCHEDULER = "qosgate-simulator"  # so a real cluster's default scheduler leaves the pods to us


# --- talking to the extender --------------------------------------------------------------------------

class ExtenderUnavailable(Exception):
    """No usable answer: connection refused/reset, timeout, TLS failure, or a non-200 status."""


class _Connection(http.client.HTTPSConnection):
    """HTTPS to an address, verifying (and sending SNI for) the Service name, as the scheduler's client does."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, server_name: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)  # type: ignore[attr-defined]


class ExtenderClient:
    """Minimal keep-alive HTTPS client, one connection per thread (the bind pool calls concurrently).

    http.client rather than httpx: the simulator measures the extender, and httpx spends more per request
    than a filter costs. `timeout` defaults to kube-scheduler's extender httpTimeout (5 s).
    """

    def __init__(self, url: str, ca_file: str | None = None, server_name: str | None = None,
                 timeout: float = 5.0, insecure: bool = False) -> None:
        self.timeout = timeout
        if insecure:
            self._context = ssl.create_default_context()
            self._context.check_hostname = False
            self._context.verify_mode = ssl.CERT_NONE
        else:
            self._context = ssl.create_default_context(cafile=ca_file)
        self._server_name = server_name
        self._local = threading.local()
        self._generation = 0
        self._open: set[_Connection] = set()  # every thread's connection, so close_all can reach them
        self._open_lock = threading.Lock()
        self.set_url(url)

    def set_url(self, url: str) -> None:
        """Point at another address (an extender restarted elsewhere); connections reopen lazily."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"extender URL must be https://host:port[/prefix], got {url!r}")
        self._host, self._port = parts.hostname, parts.port or 443
        self._prefix = parts.path.rstrip("/")
        self._generation += 1

    def _connection(self) -> _Connection:
        local = self._local
        connection = getattr(local, "connection", None)
        if (getattr(local, "generation", None) != self._generation or connection is None
                or connection not in self._open):  # closed by close(): reconnect
            if getattr(local, "connection", None) is not None:
                self._forget(local.connection)
            local.connection = _Connection(self._host, self._port, self._context,
                                           self._server_name or self._host, self.timeout)
            local.generation = self._generation
            with self._open_lock:
                self._open.add(local.connection)
        return local.connection  # type: ignore[no-any-return]

    def _forget(self, connection: _Connection) -> None:
        connection.close()
        with self._open_lock:
            self._open.discard(connection)

    def call(self, verb: str, payload: Mapping[str, Any] | bytes) -> Any:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        connection = self._connection()
        try:
            connection.request("POST", f"{self._prefix}/{verb}", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except Exception as exc:
            # OSError / HTTPException normally; AttributeError/TypeError/ValueError when close() cut the
            # connection from another thread mid-request. All mean "no answer".
            self._forget(connection)
            self._local.connection = None
            raise ExtenderUnavailable(f"{verb}: {type(exc).__name__}: {exc}") from None
        if response.status != 200:
            raise ExtenderUnavailable(f"{verb}: HTTP {response.status}: {data[:300]!r}")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ExtenderUnavailable(f"{verb}: answer is not JSON: {exc}") from None

    def close(self) -> None:
        """Close every thread's connection (a request running on one fails like a dropped connection).

        Idle keep-alive TLS connections would otherwise hold a stopping uvicorn in its graceful shutdown
        until it gives up, as the server waits for the client's close_notify.
        """
        with self._open_lock:
            connections, self._open = self._open, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()


# --- configuration and report -------------------------------------------------------------------------

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
    accounting: str = "annotated"  # for the final checks; must match the extender's
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


_FREE = re.compile(r"free protectable \S+ of \S+")
_USED = re.compile(r" \(\d+ of \d+ used\)")


def summarize_filter(result: Mapping[str, Any], candidates: int) -> str:
    """kube-scheduler-style "0/N nodes are available: …" from FailedNodes and FailedAndUnresolvableNodes.

    Per-node figures are folded away so nodes failing for the same reason are counted together, as the
    scheduler's FitError message does.
    """
    reasons: Counter[str] = Counter()
    for key in ("FailedAndUnresolvableNodes", "FailedNodes"):
        for reason in (result.get(key) or {}).values():
            reasons[_USED.sub("", _FREE.sub("free protectable memory", str(reason)))] += 1
    parts = [f"{count} × {reason}" for reason, count in reasons.most_common(4)]
    if len(reasons) > 4:
        parts.append(f"{sum(reasons.values()) - sum(c for _, c in reasons.most_common(4))} more nodes")
    return f"0/{candidates} nodes are available: " + ("; ".join(parts) or "no reason given")


# --- the simulator ---------------------------------------------------------------------------------------

@dataclass
class _Item:
    pod: dict[str, Any]
    first_error: float | None = None
    epoch: int = 0  # capacity epoch when last found unschedulable
    bind_attempts: int = 0

    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"


class Simulator:
    """Schedules pending pods through an extender. `api` is a kubernetes ApiClient (raw JSON via kube.rest).

    `on_step(index)` runs on the scheduling thread after each pod decision; tests use it to restart the
    extender mid-run (then call `capacity_changed()` so parked pods are retried).
    """

    def __init__(self, api: Any, extender: ExtenderClient, config: SimulationConfig | None = None,
                 on_step: Callable[[int], None] | None = None) -> None:
        self.api = api
        self.extender = extender
        self.config = config or SimulationConfig()
        self.on_step = on_step
        self.report = SimulationReport()
        self._rng = random.Random(self.config.seed)
        self._queue: deque[_Item] = deque()
        self._parked: list[_Item] = []
        self._cond = threading.Condition()
        self._inflight = 0
        self._epoch = 0
        self._window_start = 0
        self._windows: dict[int, tuple[list[str], bytes]] = {}
        self._bind_rng = threading.local()
        self._seeds = itertools.count(self.config.seed * 7919 + 1)

    # --- API helpers ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                 query: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        from qosgate.kube.rest import request_json

        return request_json(self.api, method, path, body=body, query=query)

    def _list(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = [("limit", "500")] + ([("continue", token)] if token else [])
            page = self._request("GET", path, query=query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    def ensure_namespace(self) -> None:
        from qosgate.kube.rest import ApiError

        with contextlib.suppress(ApiError):  # exists already, or the API has no namespaces to create
            self._request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": self.config.namespace}})

    def make_pod(self, index: int, rng: random.Random) -> dict[str, Any]:
        """A synthetic pod: memory.min annotation (what the webhook would write) plus matching requests."""
        cfg = self.config
        annotations: dict[str, str] = {}
        memory_min = 0
        if rng.random() >= cfg.zero_fraction:
            memory_min = rng.randint(cfg.min_memory_min // MI, cfg.max_memory_min // MI) * MI
        annotations[MEMORY_MIN] = str(memory_min)
        if cfg.classes and rng.random() < cfg.class_fraction:
            resource, klass = rng.choice(cfg.classes)
            annotations[CARRIER_POD] = f"{resource}={klass}"
        container: dict[str, Any] = {"name": "app", "image": "registry.k8s.io/pause:3.9"}
        if memory_min:
            container["resources"] = {"requests": {"memory": str(memory_min)}, "limits": {"memory": str(memory_min)}}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"sim-{cfg.seed}-{index:06d}", "namespace": cfg.namespace,
                             "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}, "annotations": annotations},
                "spec": {"containers": [container], "schedulerName": cfg.scheduler_name}}

    def create_pods(self) -> list[dict[str, Any]]:
        cfg = self.config
        rng = random.Random(cfg.seed)
        bodies = [self.make_pod(i, rng) for i in range(cfg.pods)]
        path = f"/api/v1/namespaces/{cfg.namespace}/pods"
        with ThreadPoolExecutor(max(1, cfg.create_workers)) as pool:
            created = list(pool.map(lambda body: self._request("POST", path, body), bodies))
        self.report.created = len(created)
        return created

    def pending_pods(self) -> list[dict[str, Any]]:
        pods = self._list(f"/api/v1/namespaces/{self.config.namespace}/pods")
        pending = [p for p in pods if not (p.get("spec") or {}).get("nodeName")
                   and (p.get("status") or {}).get("phase", "Pending") == "Pending"
                   and not (p.get("metadata") or {}).get("deletionTimestamp")
                   and (p.get("spec") or {}).get("schedulerName", "default-scheduler") == self.config.scheduler_name]
        return sorted(pending, key=lambda p: p["metadata"]["name"])

    def node_names(self) -> list[str]:
        nodes = self._list("/api/v1/nodes")
        return sorted(n["metadata"]["name"] for n in nodes if not (n.get("spec") or {}).get("unschedulable"))

    def _bound_node(self, pod: Mapping[str, Any]) -> str:
        """What the scheduler's informer would say: the pod's node in the API now ("" if unbound/gone)."""
        from qosgate.kube.rest import KubeError

        if self.api is None:
            return ""
        meta = pod["metadata"]
        try:
            current = self._request("GET", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}")
        except KubeError:
            return ""
        if (current.get("metadata") or {}).get("uid") != meta.get("uid"):
            return ""
        return str((current.get("spec") or {}).get("nodeName") or "")

    # --- scheduling ----------------------------------------------------------------------------------
    def capacity_changed(self) -> None:
        """Something may have freed capacity (a failed bind, an extender restart): retry parked pods."""
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()

    def _window(self, names: Sequence[str]) -> tuple[list[str], bytes]:
        """The next candidate list (rotating like the scheduler's nextStartNodeIndex) and its JSON.

        Windows repeat, so their JSON is made once: the simulator should spend its time waiting for the
        extender, not serialising the same 5,000 names again.
        """
        count = self.config.nodes_per_filter
        start = 0
        if count and count < len(names):
            start = self._window_start
            self._window_start = (start + count) % len(names)
        cached = self._windows.get(start)
        if cached is None:
            window = list(names) if not count or count >= len(names) else \
                [names[(start + i) % len(names)] for i in range(count)]
            cached = self._windows[start] = (window, orjson.dumps(window))
        return cached

    @staticmethod
    def _args(pod_json: bytes, names_json: bytes) -> bytes:
        """ExtenderArgs in the NodeNames form, spliced from pre-serialised parts."""
        return b'{"Pod":' + pod_json + b',"Nodes":null,"NodeNames":' + names_json + b"}"

    def run(self) -> SimulationReport:
        """Create the configured pods, schedule every pending pod of the namespace, check the result."""
        self.ensure_namespace()
        if self.config.pods:
            self.create_pods()
        self.schedule(self.pending_pods(), self.node_names())
        self._final_checks()
        return self.report

    def schedule(self, pods: Sequence[dict[str, Any]], names: Sequence[str]) -> SimulationReport:
        """Schedule the given pending pods over the given nodes.

        Touches the API only to ask whether a pod whose bind failed landed after all (not at all when the
        simulator has no `api`: the benchmark measures the extender alone this way).
        """
        self.report.nodes = len(names)
        self._queue.extend(_Item(pod) for pod in pods)
        started = time.perf_counter()
        step = 0
        with ThreadPoolExecutor(max(1, self.config.bind_workers), thread_name_prefix="sim-bind") as pool:
            while True:
                item = self._next_item()
                if item is None:
                    break
                self._schedule(item, names, pool)
                if self.on_step is not None:
                    self.on_step(step)
                step += 1
        self.report.seconds = time.perf_counter() - started
        for item in self._parked:
            self.report.unschedulable.setdefault(item.key, "unschedulable")
        return self.report

    def _next_item(self) -> _Item | None:
        with self._cond:
            while True:
                if self._queue:
                    return self._queue.popleft()
                if self._inflight:
                    self._cond.wait()
                    continue
                retry = [item for item in self._parked if item.epoch < self._epoch]
                if not retry:
                    return None
                self._parked = [item for item in self._parked if item.epoch >= self._epoch]
                for item in retry:
                    self.report.unschedulable.pop(item.key, None)
                self._queue.extend(retry)

    def _extender_error(self, item: _Item, message: str) -> None:
        self.report.extender_errors += 1
        now = time.monotonic()
        if item.first_error is None:
            item.first_error = now
        if now - item.first_error > self.config.give_up_after:
            self.report.errors[item.key] = message
            return
        time.sleep(self.config.retry_delay)
        with self._cond:
            self._queue.append(item)

    def _schedule(self, item: _Item, names: Sequence[str], pool: ThreadPoolExecutor) -> None:
        candidates, candidates_json = self._window(names)
        pod_json = orjson.dumps(item.pod)
        self.report.filter_calls += 1
        try:
            result = self.extender.call("filter", self._args(pod_json, candidates_json))
        except ExtenderUnavailable as exc:
            self._extender_error(item, str(exc))
            return
        if result.get("Error"):
            self._extender_error(item, f"filter: {result['Error']}")
            return
        passed = list(result.get("NodeNames") or [])
        if len(passed) != len(candidates) and not set(passed) <= set(candidates):
            # kube-scheduler fails the attempt when an extender claims a node it was not given.
            extra = sorted(set(passed) - set(candidates))
            self._extender_error(item, f"filter returned nodes it was not given: {extra}")
            return
        item.first_error = None
        if not passed:
            with self._cond:
                item.epoch = self._epoch
                self._parked.append(item)
                self.report.unschedulable[item.key] = summarize_filter(result, len(candidates))
            return
        if len(passed) == 1:
            node = passed[0]
        elif not self.config.prioritize:
            node = self._rng.choice(passed)  # the scheduler's own scores decide; to us they are a coin
        else:
            # Every candidate passing is the common case: its JSON is already made.
            passed_json = candidates_json if passed == candidates else orjson.dumps(passed)
            node = self._pick(pod_json, passed, passed_json)
        with self._cond:
            self._inflight += 1
        pool.submit(self._bind, item, node)

    def _pick(self, pod_json: bytes, passed: list[str], passed_json: bytes) -> str:
        """Highest extender score among the passing nodes, ties broken at random (selectHost)."""
        try:
            scores = self.extender.call("prioritize", self._args(pod_json, passed_json))
            allowed = set(passed)
            by_host = {entry["Host"]: int(entry["Score"]) for entry in scores if entry["Host"] in allowed}
        except (ExtenderUnavailable, KeyError, TypeError, ValueError):
            by_host = {}  # prioritize errors are ignored by the scheduler
        if not by_host:
            return self._rng.choice(passed)
        best = max(by_host.values())
        # A node the extender did not score counts 0, like in the scheduler's sum.
        top = [name for name, value in by_host.items() if value == best]
        if best <= 0:
            top = [name for name in passed if by_host.get(name, 0) == best]
        return self._rng.choice(top)

    def _rng_for_thread(self) -> random.Random:
        rng = getattr(self._bind_rng, "rng", None)
        if rng is None:
            rng = self._bind_rng.rng = random.Random(next(self._seeds))
        return rng  # type: ignore[no-any-return]

    def _bind(self, item: _Item, node: str) -> None:
        try:
            self._bind_once(item, node)
        except Exception as exc:  # never lose a pod to a bug in a worker: count it as a failed bind
            with self._cond:
                self.report.bind_failures += 1
                self.report.errors[item.key] = f"bind worker failed: {type(exc).__name__}: {exc}"
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    def _bind_once(self, item: _Item, node: str) -> None:
        cfg = self.config
        rng = self._rng_for_thread()
        if cfg.bind_delay:
            time.sleep(rng.uniform(0, cfg.bind_delay))
        meta = item.pod["metadata"]
        args = {"PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta.get("uid", ""),
                "Node": node}
        sends = 2 if rng.random() < cfg.bind_duplicate_rate else 1
        error = ""
        for _ in range(sends):
            with self._cond:
                self.report.bind_calls += 1
            try:
                error = str(self.extender.call("bind", args).get("Error") or "")
            except ExtenderUnavailable as exc:
                error = str(exc)
        if rng.random() < cfg.bind_timeout_rate:
            error = error or "simulated scheduler timeout waiting for the bind"
        if not error:
            with self._cond:
                self.report.placed[item.key] = node
            return
        # The scheduler forgets the assumed pod and requeues it — unless its informer shows it bound.
        landed = self._bound_node(item.pod)
        item.bind_attempts += 1
        with self._cond:
            self.report.bind_failures += 1
            if landed:
                self.report.placed[item.key] = landed
            elif item.bind_attempts >= cfg.max_bind_attempts:
                self.report.errors[item.key] = f"bind failed {item.bind_attempts} times, last: {error}"
            else:
                self._queue.append(item)
        self.capacity_changed()

    # --- final checks ---------------------------------------------------------------------------------
    def _final_checks(self) -> None:
        cfg = self.config
        nodes = {n["metadata"]["name"]: node_record_from_raw(n) for n in self._list("/api/v1/nodes")}
        pods = [pod_record_from_raw(p, cfg.accounting) for p in self._list("/api/v1/pods")]  # type: ignore[arg-type]
        used: dict[str, int] = {}
        classes: dict[str, Counter[ClassKey]] = {}
        for pod in pods:
            if pod.node_name and pod.active:
                used[pod.node_name] = used.get(pod.node_name, 0) + pod.memory_min
                classes.setdefault(pod.node_name, Counter()).update(pod.classes)
        for name, total in used.items():
            node = nodes.get(name)
            if node is not None and total > protectable(node, cfg.protectable_percent):
                self.report.overcommitted[name] = (total, protectable(node, cfg.protectable_percent))
        by_key = {f"{p.namespace}/{p.name}": p for p in pods}
        for key in self.report.unschedulable:
            pod = by_key.get(key)
            if pod is None or pod.node_name or pod.problems:
                continue
            for name, node in nodes.items():
                if node.unschedulable or node.problems:
                    continue
                fit = check_fit(pod.memory_min, pod.classes, node, used.get(name, 0), 0,
                                classes.get(name, Counter()), cfg.protectable_percent)
                if fit.ok:
                    self.report.missed[key] = name
                    break

    def cleanup(self) -> None:
        """Delete the pods the simulator created (label app.kubernetes.io/managed-by=qosgate-simulate)."""
        from qosgate.kube.rest import KubeError

        for pod in self._list(f"/api/v1/namespaces/{self.config.namespace}/pods"):
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if labels.get("app.kubernetes.io/managed-by") == MANAGED_BY:
                with contextlib.suppress(KubeError):
                    self._request("DELETE", f"/api/v1/namespaces/{self.config.namespace}/pods/"
                                            f"{pod['metadata']['name']}")


# --- an in-process extender, for trying things out and for fault injection -------------------------------

class FlakyBinder:
    """Wraps a binder: with probability `failure_rate` a bind fails — half of those before anything is sent
    (a definite failure), half after the binding landed (an ambiguous timeout the extender must survive)."""

    def __init__(self, inner: Any, failure_rate: float, seed: int = 0) -> None:
        self.inner = inner
        self.failure_rate = failure_rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def bind(self, namespace: str, name: str, uid: str, node: str) -> Any:
        from qosgate.extender.state import BindOutcome, BindResult

        with self._lock:
            roll = self._rng.random()
        if roll < self.failure_rate / 2:
            return BindResult(BindOutcome.REJECTED, "injected binding failure")
        result = self.inner.bind(namespace, name, uid, node)
        if roll < self.failure_rate and result.bound_here:
            return BindResult(BindOutcome.UNKNOWN, "injected timeout after the binding landed")
        return result


@contextlib.contextmanager
def in_process_extender(api: Any, protectable_percent: int = 90, accounting: str = "annotated",
                        strategy: str = "spread", bind_failure_rate: float = 0.0, seed: int = 0,
                        sync_timeout: float = 60.0) -> Iterator[ExtenderClient]:
    """Serve an extender over HTTPS on loopback (fresh CA), fed by watch caches of `api`; yields a client."""
    from qosgate.certs.generate import generate_certificates
    from qosgate.extender.app import create_extender_app
    from qosgate.extender.binder import KubeBinder
    from qosgate.extender.state import ExtenderSettings, ExtenderState
    from qosgate.kube.informer import ClusterCache
    from qosgate.serving.tls import running_app

    settings = ExtenderSettings(protectable_percent=protectable_percent, accounting=accounting,  # type: ignore[arg-type]
                                strategy=strategy)  # type: ignore[arg-type]
    cache = ClusterCache(api, settings.accounting)
    cache.start()
    try:
        if not cache.wait_for_sync(sync_timeout):
            raise ExtenderUnavailable(f"the watch caches did not sync within {sync_timeout:.0f}s")
        state = ExtenderState(cache.pods, cache.nodes, settings)
        binder: Any = KubeBinder(api)
        if bind_failure_rate:
            binder = FlakyBinder(binder, bind_failure_rate, seed)
        app = create_extender_app(state, binder, lambda: cache.ready)
        with tempfile.TemporaryDirectory(prefix="qosgate-sim-") as directory:
            paths = generate_certificates(directory, "qosgate-extender", "qosgate-system")
            with running_app(app, paths.directory) as port:
                client = ExtenderClient(f"https://127.0.0.1:{port}", str(paths.ca_cert),
                                        "qosgate-extender.qosgate-system.svc")
                try:
                    yield client
                finally:
                    client.close()
    finally:
        cache.stop()


# --- CLI ----------------------------------------------------------------------------------------------------

def _quantity(text: str) -> int:
    try:
        return parse_quantity(text, "quantity")
    except InvalidError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be within 0..1")
    return value


def _classes(text: str) -> tuple[ClassKey, ...]:
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        resource, eq, klass = part.partition("=")
        if not eq or not resource or not klass:
            raise argparse.ArgumentTypeError(f"{part!r} is not resource=class")
        pairs.append((resource, klass))
    return tuple(pairs)


def add_simulate_parser(subparsers: Any) -> argparse.ArgumentParser:
    sim = subparsers.add_parser(
        "simulate", help="schedule synthetic pods through the extender the way kube-scheduler does",
        description="Creates pending pods in --namespace (schedulerName qosgate-simulator, so a real "
                    "scheduler ignores them), schedules them one at a time through the extender "
                    "(filter → prioritize → asynchronous bind) and reports placements, reasons and pods/s. "
                    "Binds are real: use a test cluster or the fake API. Created pods are deleted "
                    "afterwards unless --keep-pods.")
    sim.add_argument("--kubeconfig", help="API server to read nodes from and create pods in")
    sim.add_argument("--extender-url", help="https://host:port of a running extender (default: start one "
                                            "in-process against the same API)")
    sim.add_argument("--ca-file", help="CA that signed the extender's certificate")
    sim.add_argument("--server-name", help="name to verify in the extender's certificate "
                                           "(default: the URL's host)")
    sim.add_argument("--insecure-skip-verify", action="store_true", help="do not verify the extender (testing)")
    sim.add_argument("--pods", type=int, default=200, help="pods to create (default 200; 0 = existing only)")
    sim.add_argument("--namespace", default="qosgate-sim")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--min-memory-min", type=_quantity, default=256 * MI, metavar="QUANTITY")
    sim.add_argument("--max-memory-min", type=_quantity, default=8 * 1024 * MI, metavar="QUANTITY")
    sim.add_argument("--zero-fraction", type=_fraction, default=0.1, help="pods without memory.min")
    sim.add_argument("--classes", type=_classes, default=(), metavar="RES=CLASS,...",
                     help="QoS classes to hand out, e.g. memory-qos=gold,memory-qos=silver")
    sim.add_argument("--class-fraction", type=_fraction, default=0.0)
    sim.add_argument("--bind-workers", type=int, default=16)
    sim.add_argument("--bind-delay", type=float, default=0.0, help="max random delay before each bind (s)")
    sim.add_argument("--bind-timeout-rate", type=_fraction, default=0.0)
    sim.add_argument("--bind-duplicate-rate", type=_fraction, default=0.0)
    sim.add_argument("--nodes-per-filter", type=int, default=0)
    sim.add_argument("--no-prioritize", action="store_true", help="as with no prioritizeVerb configured")
    sim.add_argument("--scheduler-name", default=SIM_SCHEDULER)
    sim.add_argument("--keep-pods", action="store_true")
    sim.add_argument("--protectable-percent", type=int, default=90, help="must match the extender's catalog")
    sim.add_argument("--accounting", choices=("annotated", "kubelet"), default="annotated")
    sim.add_argument("--strategy", choices=("spread", "binpack"), default="spread", help="in-process extender")
    sim.add_argument("--bind-failure-rate", type=_fraction, default=0.0, help="in-process extender: injected "
                                                                             "binding failures")
    sim.add_argument("-o", "--output", choices=("text", "json"), default="text")
    sim.set_defaults(func=run_simulate)
    return sim


def run_simulate(args: argparse.Namespace) -> int:
    """0: every pod placed or explained and nothing overcommitted; 1: a check failed; 2: cannot run."""
    from qosgate.kube.config import KubeConfigError, load_api_client
    from qosgate.kube.rest import KubeError

    if args.min_memory_min > args.max_memory_min:
        print("qosgate simulate: --min-memory-min exceeds --max-memory-min", file=sys.stderr)
        return 2
    config = SimulationConfig(
        pods=args.pods, namespace=args.namespace, seed=args.seed, min_memory_min=args.min_memory_min,
        max_memory_min=args.max_memory_min, zero_fraction=args.zero_fraction, classes=args.classes,
        class_fraction=args.class_fraction, scheduler_name=args.scheduler_name, bind_workers=args.bind_workers,
        bind_delay=args.bind_delay, bind_timeout_rate=args.bind_timeout_rate,
        bind_duplicate_rate=args.bind_duplicate_rate, nodes_per_filter=args.nodes_per_filter,
        prioritize=not args.no_prioritize,
        accounting=args.accounting, protectable_percent=args.protectable_percent)
    try:
        api = load_api_client(args.kubeconfig)
        with contextlib.ExitStack() as stack:
            if args.extender_url:
                client = ExtenderClient(args.extender_url, args.ca_file, args.server_name,
                                        insecure=args.insecure_skip_verify)
                stack.callback(client.close)
            else:
                client = stack.enter_context(in_process_extender(
                    api, args.protectable_percent, args.accounting, args.strategy, args.bind_failure_rate,
                    args.seed))
            simulator = Simulator(api, client, config)
            report = simulator.run()
            if not args.keep_pods:
                simulator.cleanup()
    except (KubeConfigError, KubeError, ExtenderUnavailable, ValueError, OSError) as exc:
        print(f"qosgate simulate: {exc}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(report.render())
    return 0 if report.ok else 1
