"""A tiny in-memory stand-in for the API's pods + pods/binding, with a watch delivered late on purpose.

Unit tests of the extender state need the ground truth the API would hold (which pod is bound where) and a
watch that lags behind it, without HTTP. `MemoryAPI.bind` behaves like kube-apiserver's binding subresource
(409 when already bound, 404 when gone) and can be told to fail; `deliver()` plays the watch into a PodStore.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from qosgate.core.nodefit import protectable
from qosgate.core.records import NodeRecord, pod_record_from_raw
from qosgate.extender.state import BindOutcome, BindResult
from qosgate.kube.store import ADDED, DELETED, MODIFIED, PodStore


class MemoryAPI:
    def __init__(self, store: PodStore, seed: int = 0) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.pods: dict[str, dict[str, Any]] = {}  # uid → raw pod (the API's truth)
        self.events: deque[tuple[str, dict[str, Any]]] = deque()  # not yet seen by the watch
        self.random = random.Random(seed)
        self.fail_rate = 0.0  # definite failures (rejected, nothing bound)
        self.unknown_rate = 0.0  # binding lands but the caller hears a timeout
        self.before_bind: Callable[[], None] | None = None
        self.bind_calls = 0

    def create(self, pod: dict[str, Any]) -> None:
        with self.lock:
            self.pods[pod["metadata"]["uid"]] = pod
            self.events.append((ADDED, pod))

    def delete(self, uid: str) -> None:
        with self.lock:
            pod = self.pods.pop(uid)
            self.events.append((DELETED, pod))

    def bind(self, namespace: str, name: str, uid: str, node: str) -> BindResult:
        if self.before_bind is not None:
            self.before_bind()
        with self.lock:
            self.bind_calls += 1
            pod = self.pods.get(uid)
            if pod is None:
                return BindResult(BindOutcome.REJECTED, f"pods {name!r} not found")
            current = pod["spec"].get("nodeName")
            if current:
                if current == node:
                    return BindResult(BindOutcome.ALREADY_BOUND_HERE)
                return BindResult(BindOutcome.BOUND_ELSEWHERE, f"already bound to {current}")
            roll = self.random.random()
            if roll < self.fail_rate:
                return BindResult(BindOutcome.REJECTED, "injected failure")
            pod = {**pod, "spec": {**pod["spec"], "nodeName": node}, "status": {"phase": "Running"}}
            self.pods[uid] = pod
            self.events.append((MODIFIED, pod))
            if roll < self.fail_rate + self.unknown_rate:
                return BindResult(BindOutcome.UNKNOWN, "injected timeout after the binding landed")
            return BindResult(BindOutcome.BOUND)

    def deliver(self, count: int | None = None) -> int:
        """Play up to `count` pending watch events (all when None) into the store, in order."""
        delivered = 0
        while count is None or delivered < count:
            with self.lock:
                if not self.events:
                    break
                event = self.events.popleft()
            self.store.apply(*event)
            delivered += 1
        return delivered

    def bound_memory(self, accounting: str = "annotated") -> dict[str, int]:
        """Ground truth: summed memory.min of active pods per node, as the API holds them."""
        totals: dict[str, int] = {}
        with self.lock:
            pods = list(self.pods.values())
        for pod in pods:
            record = pod_record_from_raw(pod, accounting)  # type: ignore[arg-type]
            if record.node_name and record.active:
                totals[record.node_name] = totals.get(record.node_name, 0) + record.memory_min
        return totals


def overcommitted(api: MemoryAPI, nodes: Mapping[str, NodeRecord], percent: int) -> dict[str, tuple[int, int]]:
    """Nodes whose bound memory.min exceeds what they can protect: {node: (bound, protectable)}."""
    return {name: (used, protectable(nodes[name], percent))
            for name, used in api.bound_memory().items() if used > protectable(nodes[name], percent)}
