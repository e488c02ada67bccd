"""Where quota reservations live: one ledger ConfigMap per namespace shared by every replica, or in-process.

An entry is one admitted pod not yet seen by the watch caches, keyed by its UID and encoded compactly
(`QuotaReservation`); expiry uses the wall clock because replicas share it through the ledger.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from qosgate.core.annotations import SYSTEM_NAMESPACE
from qosgate.core.qosresources import ClassAssignments
from qosgate.serving.metrics import LEDGER_CONFLICTS

LEDGER_PREFIX = "qosgate-quota-"


class Book(Protocol):
    """Where reservations live: qosgate.kube.ledger.ConfigMapLedger (cross-replica) or LocalBook (one replica)."""

    def update(self, mutate: Callable[[dict[str, str]], Any]) -> Any: ...

    def read(self) -> dict[str, str]: ...


class LocalBook:
    """In-process reservations with the ConfigMapLedger's interface, for a single replica (no API round trips)."""

    # No other replica reads this book, so nobody's watch can lag behind ours: an observed reservation can go.
    shared = False

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()

    def update(self, mutate: Callable[[dict[str, str]], Any]) -> Any:
        with self._lock:
            data = dict(self._data)
            result = mutate(data)
            self._data = data
            return result

    def read(self) -> dict[str, str]:
        with self._lock:
            return dict(self._data)


@dataclass(frozen=True, slots=True)
class QuotaReservation:
    assignments: ClassAssignments
    memory_min: int
    expires: float  # wall clock: shared by replicas through the ledger
    created: float
    name: str = ""  # the pod's name, for people reading the ledger

    def encode(self) -> str:
        return orjson.dumps({"p": self.assignments.pod_level, "c": self.assignments.container_level,
                             "m": self.memory_min, "e": round(self.expires, 3), "t": round(self.created, 3),
                             "n": self.name}).decode()

    @classmethod
    def decode(cls, text: str) -> QuotaReservation | None:
        try:
            raw = orjson.loads(text)
            return cls(ClassAssignments(tuple((str(r), str(c)) for r, c in raw["p"]),
                                        tuple((str(r), str(c)) for r, c in raw["c"])),
                       int(raw["m"]), float(raw["e"]), float(raw.get("t", 0.0)), str(raw.get("n", "")))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None



def local_books() -> Callable[[str], Book]:
    """One in-process book per namespace: exact within one replica only."""
    books: dict[str, LocalBook] = {}
    lock = threading.Lock()

    def book(namespace: str) -> Book:
        with lock:
            return books.setdefault(namespace, LocalBook())

    return book


def ledger_name(namespace: str) -> str:
    return f"{LEDGER_PREFIX}{namespace}"


def ledger_books(api_client: Any, ledger_namespace: str = SYSTEM_NAMESPACE, **ledger_options: Any
                 ) -> Callable[[str], Book]:
    """One ledger ConfigMap per namespace in `ledger_namespace`, shared by every replica."""
    from qosgate.kube.ledger import ConfigMapLedger

    ledgers: dict[str, ConfigMapLedger] = {}
    lock = threading.Lock()
    labels = {"app.kubernetes.io/name": "qosgate", "app.kubernetes.io/component": "quota-ledger"}

    def book(namespace: str) -> Book:
        with lock:
            found = ledgers.get(namespace)
            if found is None:
                found = ledgers[namespace] = ConfigMapLedger(
                    api_client, ledger_namespace, ledger_name(namespace), labels=labels,
                    on_conflict=lambda name: LEDGER_CONFLICTS.labels(name).inc(), **ledger_options)
            return found

    return book
