"""Stateful quota admission for pods (architecture §4.1.3): cache usage + reservations, exact across threads
and replicas.

Usage of a namespace = its active pods in the informer cache (PodStore.namespace_usage) + reservations of
pods admitted but not yet seen by the cache. A reservation is keyed by the pod UID (validating webhooks run
after the apiserver assigned it, architecture §7.2) and stops counting as soon as the cache shows that UID — or
showed it and then saw the pod deleted — or when it expires (a later admission step or the storage write
failed, so the pod will never appear).

Exactness
- Inside a replica, admissions of one namespace go through one lane: a group commit. The first request
  becomes the leader, decides every request queued behind it in one batch and writes one ledger update;
  requests arriving meanwhile form the next batch. Serial per namespace (so a batch sees every earlier
  admission) without paying one API round trip per pod.
- Across replicas, the reservations live in a ledger ConfigMap per namespace, `qosgate-quota-<namespace>` in
  qosgate-system, updated by optimistic concurrency (kube.ledger.ConfigMapLedger: read, decide, PUT with the read
  resourceVersion, 409 → re-read and decide again). Every replica's admissions pass through the same object,
  so two replicas can never both take the last unit of capacity.

  One ConfigMap per namespace rather than one for the cluster or a sharded set: quotas are per namespace,
  so namespaces never contend with each other (a hot namespace cannot slow the rest down with 409s), the
  object stays small (only that namespace's in-flight reservations) and nothing needs rebalancing. The cost
  is one small ConfigMap per namespace that ever admitted a pod with a quota'd class; it holds an empty
  `data` when idle.

  Ledger entries are kept until they expire even after this replica's cache has seen the pod: another
  replica's watch may lag behind ours, and it must keep counting the pod through the ledger until its own
  cache has it. Entries are pruned once expired, or once observed here and older than `observed_grace`
  (the watch lag we tolerate between replicas) — which bounds the ConfigMap by the admission rate × grace.

- dryRun requests are decided on the same data and never recorded.

Failure (fail closed, only for pods asking for a class in a namespace that has a quota):
- caches not synced, quota ConfigMaps unreadable, ledger API errors, ledger contention beyond the retry
  bound, or a lane wait beyond `wait_timeout` → denied with code 503 and a message saying to retry;
- an invalid quota ConfigMap → denied with its field errors (the validating webhook refuses such writes,
  so this only happens when one was written while the webhook was down).
Pods without any class never reach this module.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from qosgate.core.qosresources import ClassAssignments
from qosgate.core.quota import Quota, QuotaVerdict, add_usage, combined_usage, evaluate
from qosgate.core.records import PodRecord
from qosgate.kube.store import ClassUsage
from qosgate.webhook.quota.books import Book, QuotaReservation, local_books
from qosgate.webhook.quota.lanes import GroupCommit, Ticket
from qosgate.webhook.quota.source import QuotaProvider

log = logging.getLogger("qosgate.webhook.quota")

DEFAULT_TTL = 30.0
DEFAULT_OBSERVED_GRACE = 5.0
# Below the webhook's timeoutSeconds (3 in manifests/): a request that waited longer in its namespace's lane
# gets a clear retryable 503 instead of the apiserver's timeout error.
DEFAULT_WAIT_TIMEOUT = 2.5


class PodSource(Protocol):
    """What the engine reads from the pod cache (qosgate.kube.store.PodStore)."""

    @property
    def synced(self) -> bool: ...

    def get(self, uid: str) -> PodRecord | None: ...

    def namespace_usage(self, namespace: str) -> Mapping[tuple[str, str], ClassUsage]: ...

    def subscribe(self, fn: Callable[[PodRecord | None, PodRecord | None], None]) -> None: ...


@dataclass(slots=True)
class _QuotaTicket(Ticket):
    pod_uid: str = ""
    pod_name: str = ""
    assignments: ClassAssignments = field(default_factory=ClassAssignments)
    memory_min: int = 0
    dry_run: bool = False
    quotas: Sequence[Quota] = ()
    verdict: QuotaVerdict | None = None


@dataclass(frozen=True, slots=True)
class QuotaOutcome:
    allowed: bool
    message: str = ""
    code: int = 200
    reason: str = ""
    warnings: tuple[str, ...] = ()
    audit: tuple[str, ...] = ()


@dataclass(slots=True)
class EngineStats:
    admitted: int = 0
    denied: int = 0
    unavailable: int = 0
    batches: int = 0
    batched_requests: int = 0


class QuotaEngine:
    """Admit or refuse pod creations against the namespace quotas; thread-safe, blocking (run it off the loop).

    `books(namespace)` returns the reservation book of a namespace: `ledger_books(api_client)` for several
    replicas, `local_books()` for one. `clock` is the wall clock (ledger expiry is shared between replicas).
    """

    def __init__(self, pods: PodSource, quotas: QuotaProvider, books: Callable[[str], Book] | None = None, *,
                 ttl: float = DEFAULT_TTL, observed_grace: float = DEFAULT_OBSERVED_GRACE,
                 wait_timeout: float = DEFAULT_WAIT_TIMEOUT, clock: Callable[[], float] = time.time):
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.pods = pods
        self.quotas = quotas
        self.books = books or local_books()
        self.ttl = ttl
        self.observed_grace = min(observed_grace, ttl)
        self.wait_timeout = wait_timeout
        self.clock = clock
        self.stats = EngineStats()
        self._commit = GroupCommit(self._decide_batch, wait_timeout)  # type: ignore[arg-type]
        # UIDs of pods with classes the cache saw deleted, until their reservations have surely expired: a pod
        # created and deleted within the TTL must not be counted again through its lingering reservation.
        self._gone: dict[str, float] = {}
        self._gone_lock = threading.Lock()
        self._decoded: dict[str, QuotaReservation | None] = {}
        pods.subscribe(self._on_pod)

    # --- cache events --------------------------------------------------------------------------------
    def _on_pod(self, old: PodRecord | None, new: PodRecord | None) -> None:
        if new is None and old is not None and old.classes:
            with self._gone_lock:
                self._gone[old.uid] = self.clock() + self.ttl

    def _observed(self, uid: str) -> bool:
        return self.pods.get(uid) is not None or uid in self._gone

    def _prune_gone(self, now: float) -> None:
        # Deadlines are inserted in non-decreasing order, so the expired ones are at the front: popping them
        # costs what expired, never a scan of everything still remembered.
        with self._gone_lock:
            for uid, until in list(itertools.islice(self._gone.items(), 256)):
                if until > now:
                    break
                del self._gone[uid]

    def _decode(self, text: str) -> QuotaReservation | None:
        """Ledger entries never change once written: decode each text once, not on every decision."""
        found = self._decoded.get(text)
        if found is None:
            found = QuotaReservation.decode(text)
            if len(self._decoded) >= 16_384:
                self._decoded.clear()
            self._decoded[text] = found
        return found

    @property
    def ready(self) -> bool:
        return self.pods.synced and self.quotas.synced

    # --- admission -----------------------------------------------------------------------------------
    def admit(self, namespace: str, pod_uid: str, pod_name: str, assignments: ClassAssignments, memory_min: int,
              dry_run: bool) -> QuotaOutcome:
        """Decide one pod creation; records a reservation when admitted (unless dry-run)."""
        if not assignments.pod_level and not assignments.container_level:
            return QuotaOutcome(True)
        if not self.quotas.synced:
            return self._unavailable(f"namespace {namespace}: quota ConfigMaps are still being loaded")
        lookup = self.quotas.quotas_for(namespace)
        if lookup.errors:
            self.stats.denied += 1
            return QuotaOutcome(False, f"the quota in force for namespace {namespace} is invalid, so pods asking "
                                       "for a QoS class are refused until an admin fixes it: "
                                       + "; ".join(lookup.errors), 403, "Forbidden")
        if not lookup.quotas:
            return QuotaOutcome(True)  # no quota anywhere: unrestricted, nothing to reserve
        if not self.pods.synced:
            return self._unavailable(f"namespace {namespace}: the pod cache is still syncing")
        ticket = _QuotaTicket(namespace, pod_uid=pod_uid, pod_name=pod_name, assignments=assignments,
                              memory_min=memory_min, dry_run=dry_run, quotas=lookup.quotas)
        self._commit.run(ticket)
        if ticket.error is not None:
            return self._unavailable(ticket.error)
        verdict = ticket.verdict
        assert verdict is not None
        if not verdict.admitted:
            self.stats.denied += 1
            return QuotaOutcome(False, "; ".join(verdict.denials), 403, "Forbidden", verdict.warnings, verdict.audit)
        self.stats.admitted += 1
        return QuotaOutcome(True, warnings=verdict.warnings, audit=verdict.audit)

    def _unavailable(self, why: str) -> QuotaOutcome:
        self.stats.unavailable += 1
        return QuotaOutcome(False, f"quota cannot be checked right now ({why}); retry the request",
                            503, "ServiceUnavailable")

    def _decide_batch(self, namespace: str, batch: list[_QuotaTicket]) -> None:
        self.stats.batches += 1
        self.stats.batched_requests += len(batch)
        live = [t for t in batch if not t.abandoned]
        writers = [t for t in live if not t.dry_run]
        try:
            book = self.books(namespace)
            shared = getattr(book, "shared", True)
            if writers:
                verdicts = book.update(lambda data: self._decide(namespace, live, data, shared))
            else:  # dry-run only: read, never write
                verdicts = self._decide(namespace, live, book.read(), shared)
        except Exception as exc:  # API down, 409s beyond the bound, a rejected write: fail closed, say why
            log.warning("quota ledger for namespace %s unavailable: %s", namespace, exc)
            for ticket in live:
                ticket.error = f"namespace {namespace}: quota ledger unavailable: {exc}"
            return
        for ticket, verdict in zip(live, verdicts, strict=True):
            ticket.verdict = verdict

    def _decide(self, namespace: str, batch: Sequence[_QuotaTicket], data: dict[str, str],
                shared: bool = True) -> list[QuotaVerdict]:
        """The pure heart, run under the book's read–modify–write (possibly several times on 409s)."""
        now = self.clock()
        self._prune_gone(now)
        # A retried call for a pod already holding a reservation is decided afresh, not counted twice.
        in_batch = {t.pod_uid for t in batch if not t.dry_run}
        entries: dict[str, QuotaReservation | None] = {uid: self._decode(text) for uid, text in data.items()}
        # Cache first, then reservations: a pod the cache shows is counted there, never twice.
        base = self.pods.namespace_usage(namespace)
        counted = [(r.assignments, r.memory_min) for uid, r in entries.items()
                   if r is not None and r.expires > now and uid not in in_batch and not self._observed(uid)]
        usage = combined_usage(base, counted)
        verdicts: list[QuotaVerdict] = []
        writes: dict[str, str] = {}
        for ticket in batch:
            verdict = evaluate(ticket.quotas, usage, ticket.assignments, ticket.memory_min, namespace)
            verdicts.append(verdict)
            if verdict.admitted and not ticket.dry_run:
                add_usage(usage, ticket.assignments, ticket.memory_min)
                writes[ticket.pod_uid] = QuotaReservation(ticket.assignments, ticket.memory_min, now + self.ttl, now,
                                                     ticket.pod_name).encode()
        if writes:
            # Prune only when writing anyway: a refusal must not cost a write.
            grace = self.observed_grace if shared else 0.0
            for uid, entry in entries.items():
                if entry is None or entry.expires <= now or (now - entry.created >= grace and self._observed(uid)):
                    del data[uid]
            data.update(writes)
        return verdicts

    # --- introspection (tests, metrics) ----------------------------------------------------------------
    def samples(self) -> list[tuple[str, str, dict[str, str], float]]:
        """Scrape-time samples for qosgate.serving.metrics.STATE: `STATE.register("quota", engine.samples)`.

        Counters are plain ints bumped without a lock (leaders of different namespaces may race): close
        enough for monitoring, never used for decisions.
        """
        stats = self.stats
        help_text = "Quota admissions of pods asking for a class, by outcome (since start)."
        return [
            ("qosgate_quota_admissions", help_text, {"outcome": "admitted"}, stats.admitted),
            ("qosgate_quota_admissions", help_text, {"outcome": "denied"}, stats.denied),
            ("qosgate_quota_admissions", help_text, {"outcome": "unavailable"}, stats.unavailable),
            ("qosgate_quota_batches", "Group-commit batches decided (one ledger write each at most).", {},
             stats.batches),
            ("qosgate_quota_batched_requests", "Requests decided in those batches.", {}, stats.batched_requests),
            ("qosgate_quota_ready", "1 when the pod cache and quota ConfigMaps are synced.", {}, float(self.ready)),
        ]

    def reservations(self, namespace: str) -> dict[str, QuotaReservation]:
        """Live (unexpired) reservations of a namespace, as the book holds them."""
        now = self.clock()
        found = {uid: QuotaReservation.decode(text) for uid, text in self.books(namespace).read().items()}
        return {uid: r for uid, r in found.items() if r is not None and r.expires > now}
