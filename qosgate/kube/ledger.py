"""Optimistic-concurrency read–modify–write of one ConfigMap's `data` (architecture §4.1.3, the ResourceQuota pattern).

Webhook replicas serialise their quota decisions through this object: each update reads the ConfigMap,
lets the caller decide on a copy of its data, and writes back with the resourceVersion it read. A 409
means another replica wrote in between, so the decision is remade on fresh data — never on stale data.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from qosgate.kube.rest import ApiError, KubeError, request_json
from qosgate.kube.transport import KubeClient

T = TypeVar("T")


class LedgerConflictError(KubeError):
    """Every attempt lost the race to another writer."""


class ConfigMapLedger:
    """One ConfigMap used as a ledger; safe to share between threads and to have several per process."""

    def __init__(
        self,
        api_client: KubeClient,
        namespace: str,
        name: str,
        *,
        max_attempts: int = 10,
        backoff_initial: float = 0.005,
        backoff_max: float = 0.2,
        labels: dict[str, str] | None = None,
        request_timeout: float = 2.0,
        on_conflict: Callable[[str], object] | None = None,
    ):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.api_client = api_client
        self.namespace = namespace
        self.name = name
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.labels = dict(labels or {})
        self.on_conflict = on_conflict  # told the ledger's name on every 409 (metrics)
        # Bounded so a hung API server fails one decision quickly instead of holding a namespace's queue.
        self.request_timeout = request_timeout
        # The object our own last write returned. When this replica is the only writer (the apiserver keeps
        # its connection to one webhook endpoint), the next write can skip the GET; a 409 proves it stale.
        self._last_written: dict[str, Any] | None = None
        self._counter_lock = threading.Lock()
        self.conflicts = 0  # 409s seen (metrics)
        self.writes = 0  # successful writes
        self.exhausted = 0  # updates that gave up with LedgerConflictError

    @property
    def _collection(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps"

    @property
    def _path(self) -> str:
        return f"{self._collection}/{self.name}"

    def _get(self) -> dict[str, Any] | None:
        try:
            return request_json(self.api_client, "GET", self._path, timeout=self.request_timeout)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def read(self) -> dict[str, str]:
        """Current data ({} when the ConfigMap does not exist yet)."""
        obj = self._get()
        return dict((obj or {}).get("data") or {})

    def update(self, mutate: Callable[[dict[str, str]], T]) -> T:
        """Apply `mutate` to a fresh copy of the data and store the result atomically; return its value.

        `mutate` may run several times (once per attempt) and must therefore be a pure decision on its
        argument. Raising from it aborts without writing. If it leaves the data unchanged nothing is
        written and its value is returned: the decision was made on the latest committed data.
        """
        attempt = 0
        cached = self._last_written
        while attempt < self.max_attempts:
            obj = cached if cached is not None else self._get()
            current = dict((obj or {}).get("data") or {})
            data = dict(current)
            result = mutate(data)
            if data == current:
                if cached is not None:
                    cached = None  # a decision that writes nothing must rest on committed data, not our copy
                    continue
                return result  # nothing to record (and nothing to create for a missing ConfigMap)
            _check_data(data)
            try:
                if obj is None:
                    metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
                    if self.labels:
                        metadata["labels"] = self.labels
                    written = request_json(self.api_client, "POST", self._collection, timeout=self.request_timeout,
                                           body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                                                 "data": data})
                else:
                    # The resourceVersion we read rides along in metadata: the precondition for the write.
                    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata") or {},
                            "data": data}
                    if "binaryData" in obj:
                        body["binaryData"] = obj["binaryData"]
                    written = request_json(self.api_client, "PUT", self._path, body=body,
                                           timeout=self.request_timeout)
            except ApiError as exc:
                self._last_written = cached = None
                if not exc.conflict:  # 409 covers both a stale update and a lost create race
                    raise
                with self._counter_lock:
                    self.conflicts += 1
                if self.on_conflict is not None:
                    self.on_conflict(self.name)
                attempt += 1
                if attempt < self.max_attempts:
                    ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
                    time.sleep(random.uniform(0, ceiling))
                continue
            except KubeError:
                self._last_written = None
                raise
            self._last_written = written if isinstance(written.get("metadata"), dict) else None
            with self._counter_lock:
                self.writes += 1
            return result
        with self._counter_lock:
            self.exhausted += 1
        raise LedgerConflictError(
            f"ConfigMap {self.namespace}/{self.name}: gave up after {self.max_attempts} attempts, each overtaken "
            "by a concurrent writer (409 Conflict); retry the request")


def _check_data(data: dict[str, str]) -> None:
    bad = [key for key, value in data.items() if not isinstance(key, str) or not isinstance(value, str)]
    if bad:
        raise TypeError(f"ConfigMap data must map strings to strings; offending keys: {bad[:5]!r}")
