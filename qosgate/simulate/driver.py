"""`qosgate simulate`: drive a qosgate extender over HTTPS the way kube-scheduler does, against an API server.

What kube-scheduler does, and so what this does (architecture §7.1):
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

import contextlib
import itertools
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from qosgate.core.annotations import CARRIER_POD, MEMORY_MIN
from qosgate.core.nodefit import check_fit, protectable
from qosgate.core.records import node_record_from_raw, pod_record_from_raw
from qosgate.core.types import ClassKey
from qosgate.simulate.client import ExtenderClient, ExtenderUnavailable
from qosgate.simulate.model import MANAGED_BY, MI, SimulationConfig, SimulationReport, summarize_filter

if TYPE_CHECKING:
    from qosgate.kube.transport import KubeClient


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
    """Schedules pending pods through an extender. `api` is a KubeClient (raw JSON via qosgate.kube.rest).

    `on_step(index)` runs on the scheduling thread after each pod decision; tests use it to restart the
    extender mid-run (then call `capacity_changed()` so parked pods are retried).
    """

    def __init__(self, api: KubeClient | None, extender: ExtenderClient, config: SimulationConfig | None = None,
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
        from qosgate.kube.rest import TransportError, request_json

        if self.api is None:
            raise TransportError(f"{method} {path}: the simulator was given no API server")
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
            return str(self._rng.choice(passed))
        best = max(by_host.values())
        # A node the extender did not score counts 0, like in the scheduler's sum.
        top = [name for name, value in by_host.items() if value == best]
        if best <= 0:
            top = [name for name in passed if by_host.get(name, 0) == best]
        return str(self._rng.choice(top))

    def _rng_for_thread(self) -> random.Random:
        rng = getattr(self._bind_rng, "rng", None)
        if rng is None:
            rng = self._bind_rng.rng = random.Random(next(self._seeds))
        chosen: random.Random = rng
        return chosen

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
        pods = [pod_record_from_raw(p, cfg.accounting) for p in self._list("/api/v1/pods")]
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
            waiting = by_key.get(key)
            if waiting is None or waiting.node_name or waiting.problems:
                continue
            for name, node in nodes.items():
                if node.unschedulable or node.problems:
                    continue
                fit = check_fit(waiting.memory_min, waiting.classes, node, used.get(name, 0), 0,
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
