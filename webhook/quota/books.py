"""Where quota reservations live: one ledger ConfigMap per namespace shared by every replica, or in-process.

An entry is either one admitted pod not yet seen by the watch caches, keyed by its UID and encoded compactly
(`QuotaReservation`), or one replica's allowance — capacity it holds ahead and spends locally
(`AllowanceEntry`, key `allowance.<replica>`). Expiry uses the wall clock because replicas share it
through the ledger.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from qosgate.core.annotations import SYSTEM_NAMESPACE
from qosgate.core.qosresources import ClassAssignments
from qosgate.core.quota import Usage
from qosgate.core.types import ClassKey
from qosgate.serving.metrics import LEDGER_CONFLICTS

LEDGER_PREFIX = "qosgate-quota-"
# Ledger keys of replicas' allowances (capacity held ahead, architecture §4.1.3); every other key is a pod UID.
ALLOWANCE_PREFIX = "allowance."


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


@dataclass(frozen=True, slots=True)
class AllowanceEntry:
    """One replica's held capacity in a namespace: class → (pods, containers, memory.min bytes), and the pods
    it holds capacity for as of the write (uid → their amounts), so others that see one count it once."""

    amounts: Mapping[ClassKey, Usage]
    expires: float  # wall clock: after it, the capacity counts for nobody
    # uid → (its amount, when its slot dies if the pod never appears)
    listed: Mapping[str, tuple[Mapping[ClassKey, Usage], float]] = field(default_factory=dict)

    def encode(self) -> str:
        needs: dict[tuple[tuple[str, str, int, int, int], ...], int] = {}
        listed = []
        for uid, (amount, deadline) in self.listed.items():
            shape = tuple((r, c, u.pods, u.containers, u.memory_min) for (r, c), u in sorted(amount.items()))
            listed.append([uid, needs.setdefault(shape, len(needs)), round(deadline, 3)])
        return orjson.dumps({"a": [[r, c, u.pods, u.containers, u.memory_min]
                                   for (r, c), u in sorted(self.amounts.items())],
                             "e": round(self.expires, 3),
                             "n": [[list(row) for row in shape] for shape in needs],
                             "l": listed}).decode()

    @classmethod
    def decode(cls, text: str) -> AllowanceEntry | None:
        try:
            raw = orjson.loads(text)
            amounts = _amounts(raw["a"])
            shapes: list[dict[ClassKey, Usage]] = []
            for rows in raw.get("n", []):
                shape = _amounts(rows)
                if shape is None:
                    return None
                shapes.append(shape)
            if amounts is None:
                return None
            listed = {str(uid): (shapes[int(index)], float(deadline)) for uid, index, deadline in raw.get("l", [])}
            return cls(amounts, float(raw["e"]), listed)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
            return None


def _amounts(rows: Any) -> dict[ClassKey, Usage] | None:
    amounts: dict[ClassKey, Usage] = {}
    for resource, klass, pods, containers, memory_min in rows:
        values = (int(pods), int(containers), int(memory_min))
        if min(values) < 0:
            return None
        amounts[(str(resource), str(klass))] = Usage(*values)
    return amounts


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
