"""Fault injection for the in-process extender."""

from __future__ import annotations

import random
import threading
from typing import Any


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
