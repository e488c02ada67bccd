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
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from qosgate.core.qosresources import ClassAssignments
from qosgate.core.quota import (
    ALLOW,
    Quota,
    QuotaVerdict,
    Usage,
    add_amounts,
    add_usage,
    allow_list_verdict,
    allowance_limits,
    amount_of,
    combined_usage,
    evaluate,
    headroom,
    limited_part,
    prefetch,
)
from qosgate.core.records import PodRecord
from qosgate.core.types import ClassKey
from qosgate.kube.store import ClassUsage
from qosgate.webhook.quota.allowance import (
    LISTED_MAX,
    Amount,
    HeldCapacity,
    WriteBasis,
    copy_amount,
    is_empty,
    minus,
    positive,
)
from qosgate.webhook.quota.books import ALLOWANCE_PREFIX, AllowanceEntry, Book, QuotaReservation, local_books
from qosgate.webhook.quota.lanes import GroupCommit, Ticket
from qosgate.webhook.quota.source import QuotaProvider

log = logging.getLogger("qosgate.webhook.quota")

DEFAULT_TTL = 30.0
DEFAULT_OBSERVED_GRACE = 5.0
# Below the webhook's timeoutSeconds (3 in manifests/): a request that waited longer in its namespace's lane
# gets a clear retryable 503 instead of the apiserver's timeout error.
DEFAULT_WAIT_TIMEOUT = 2.5
# Held capacity nobody spent for this long is handed back, so other replicas can use it.
DEFAULT_IDLE_RETURN = 2.0


def replica_name() -> str:
    """This process's name in the ledger: host (the pod's name in a cluster), pid and a random part, so a
    restarted process never mistakes its predecessor's allowance for its own."""
    raw = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
    return re.sub(r"[^-._a-zA-Z0-9]", "-", raw)[:200]


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
    # "reserve": a per-pod ledger entry; "held": admitted against this replica's allowance (architecture
    # §4.1.3); "refill": hold more ahead; "return": hand back `returning` and renew the entry.
    mode: str = "reserve"
    need: Amount = field(default_factory=dict)  # the limited part of the pod's amount ("held")
    returning: Amount = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _HeldPlan:
    """What one batch writes as this replica's allowance entry, applied locally once the write succeeded."""

    held: Amount
    expires: float
    quotas: tuple[Quota, ...]
    charges: tuple[tuple[str, Amount], ...]
    returned: Amount
    released: Mapping[str, Amount]
    listed: Mapping[str, tuple[Amount, float]]


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
    held_admissions: int = 0  # admitted against held capacity: no ledger write on the request path


class QuotaEngine:
    """Admit or refuse pod creations against the namespace quotas; thread-safe, blocking (run it off the loop).

    `books(namespace)` returns the reservation book of a namespace: `ledger_books(api_client)` for several
    replicas, `local_books()` for one. `clock` is the wall clock (ledger expiry is shared between replicas).
    """

    def __init__(self, pods: PodSource, quotas: QuotaProvider, books: Callable[[str], Book] | None = None, *,
                 ttl: float = DEFAULT_TTL, observed_grace: float = DEFAULT_OBSERVED_GRACE,
                 wait_timeout: float = DEFAULT_WAIT_TIMEOUT, clock: Callable[[], float] = time.time,
                 allowances: bool = True, replica: str | None = None, idle_return: float = DEFAULT_IDLE_RETURN):
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
        # Allowances (shared books only: a replica alone has no round trip to save).
        self.allowances = allowances
        self.idle_return = idle_return
        self.replica_key = ALLOWANCE_PREFIX + (replica or replica_name())
        self._held: dict[str, HeldCapacity] = {}
        self._held_lock = threading.Lock()
        self._limits_memo: tuple[tuple[Quota, ...], dict[ClassKey, Usage] | None] = ((), {})
        self._decoded_allowances: dict[str, AllowanceEntry | None] = {}
        self._background: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._maintainer: threading.Thread | None = None
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
        if self.allowances and getattr(self.books(namespace), "shared", True):
            limits = self._limits(lookup.quotas)
            if limits is not None:
                decided = self._admit_held(ticket, limits)
                if decided is not None:
                    return decided
        return self._run(ticket)

    def _run(self, ticket: _QuotaTicket) -> QuotaOutcome:
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

    # --- allowances: capacity held ahead, spent without a ledger write -------------------------------------
    def _limits(self, quotas: Sequence[Quota]) -> dict[ClassKey, Usage] | None:
        memo_quotas, memo_limits = self._limits_memo
        if len(memo_quotas) == len(quotas) and all(a is b for a, b in zip(memo_quotas, quotas, strict=True)):
            return memo_limits
        limits = allowance_limits(quotas)
        self._limits_memo = (tuple(quotas), limits)
        return limits

    def _state(self, namespace: str) -> HeldCapacity:
        state = self._held.get(namespace)
        if state is None:
            with self._held_lock:
                state = self._held.setdefault(namespace, HeldCapacity())
        return state

    def _admit_held(self, ticket: _QuotaTicket, limits: Mapping[ClassKey, Usage]) -> QuotaOutcome | None:
        """Decide without the lane when possible; None sends the ticket to the lane (a ledger write)."""
        namespace = ticket.namespace
        listed = allow_list_verdict(ticket.quotas, ticket.assignments, namespace)
        if not listed.admitted:  # a class the namespace does not allow at all: no usage to look at
            self.stats.denied += 1
            return QuotaOutcome(False, "; ".join(listed.denials), 403, "Forbidden", listed.warnings, listed.audit)
        need = limited_part(amount_of(ticket.assignments, ticket.memory_min), limits)
        if not need:  # nothing the pod uses is limited: nothing to count, nothing to record
            self.stats.admitted += 1
            return QuotaOutcome(True, warnings=listed.warnings, audit=listed.audit)
        state = self._state(namespace)
        now = self.clock()
        state.release_due(now, self._observed, self.observed_grace, self.ttl)
        if state.try_spend(ticket.pod_uid, need, ticket.quotas, now, self.ttl / 3, ticket.dry_run):
            self.stats.admitted += 1
            self.stats.held_admissions += 1
            if not ticket.dry_run and state.claim_refill():
                self._in_background(self._refill, namespace, state)
            return QuotaOutcome(True, warnings=listed.warnings, audit=listed.audit)
        ticket.mode = "held"
        ticket.need = need
        return None

    def _in_background(self, fn: Callable[[str, HeldCapacity], None], namespace: str, state: HeldCapacity) -> None:
        with self._held_lock:
            if self._background is None:
                self._background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="quota-allowance")
            pool = self._background
        try:
            pool.submit(fn, namespace, state)
        except RuntimeError:  # shutting down
            state.refill_done()

    def _refill(self, namespace: str, state: HeldCapacity) -> None:
        try:
            lookup = self.quotas.quotas_for(namespace)
            if self._limits(lookup.quotas) is not None:
                self._commit.run(_QuotaTicket(namespace, patient=True, mode="refill", quotas=lookup.quotas))
        except Exception:  # a background nicety: the request path falls back to writing itself
            log.exception("refilling the quota allowance of namespace %s failed", namespace)
        finally:
            state.refill_done()

    def maintain(self, hand_back_all: bool = False) -> None:
        """One round of allowance upkeep: hand back the slots of pods everyone counts now and capacity nobody
        spent for `idle_return` seconds, renew entries half-way to expiry. Blocking (ledger writes)."""
        with self._held_lock:
            states = list(self._held.items())
        for namespace, state in states:
            now = self.clock()
            state.release_due(now, self._observed, self.observed_grace, self.ttl)
            if not state.has_work():
                continue
            _, expires = state.snapshot()
            spare = positive(state.spare())
            idle = hand_back_all or now - state.last_admission >= self.idle_return
            give_back = spare if idle and not is_empty(spare) else {}
            if not give_back and not state.basis().releasing and expires - now >= self.ttl / 2:
                continue
            state.set_aside(give_back)
            lookup = self.quotas.quotas_for(namespace)
            ticket = _QuotaTicket(namespace, patient=True, mode="return", quotas=lookup.quotas,
                                  returning=copy_amount(give_back))
            try:
                self._commit.run(ticket)
            except Exception:
                log.exception("handing back the quota allowance of namespace %s failed", namespace)

    def start_maintenance(self, interval: float = 1.0) -> None:
        """Run `maintain` every `interval` seconds in a daemon thread until `stop()`."""
        def loop() -> None:
            while not self._stopping.wait(interval):
                try:
                    self.maintain()
                except Exception:
                    log.exception("quota allowance upkeep failed")

        self._maintainer = threading.Thread(target=loop, name="quota-allowance-upkeep", daemon=True)
        self._maintainer.start()

    def stop(self) -> None:
        """Hand back every spare unit (other replicas may use it at once) and stop the background work."""
        self._stopping.set()
        if self._maintainer is not None:
            self._maintainer.join(timeout=5)
        try:
            self.maintain(hand_back_all=True)
        except Exception:
            log.exception("handing back quota allowances at shutdown failed")
        with self._held_lock:
            pool, self._background = self._background, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _decode_allowance(self, text: str) -> AllowanceEntry | None:
        found = self._decoded_allowances.get(text)
        if found is None:
            found = AllowanceEntry.decode(text)
            if len(self._decoded_allowances) >= 4096:
                self._decoded_allowances.clear()
            self._decoded_allowances[text] = found
        return found

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
                verdicts, plan = book.update(lambda data: self._decide(namespace, live, data, shared))
            else:  # dry-run only: read, never write
                verdicts, plan = self._decide(namespace, live, book.read(), shared)
        except Exception as exc:  # API down, 409s beyond the bound, a rejected write: fail closed, say why
            log.warning("quota ledger for namespace %s unavailable: %s", namespace, exc)
            for ticket in live:
                ticket.error = f"namespace {namespace}: quota ledger unavailable: {exc}"
                if ticket.returning:
                    self._state(namespace).failed(ticket.returning)
            return
        if plan is not None:
            self._state(namespace).granted(plan.held, plan.expires, plan.quotas, plan.charges, plan.returned,
                                           plan.released, self.clock())
        for ticket, verdict in zip(live, verdicts, strict=True):
            ticket.verdict = verdict

    def _decide(self, namespace: str, batch: Sequence[_QuotaTicket], data: dict[str, str],
                shared: bool = True) -> tuple[list[QuotaVerdict], _HeldPlan | None]:
        """The pure heart, run under the book's read–modify–write (possibly several times on 409s).

        Usage = the cache + per-pod reservations the cache does not show yet + every other replica's unexpired
        allowance + our own allowance (minus our charges the cache already counts). Our allowance counts whole:
        the request path may be spending its spare while this runs. Local state changes only once the write
        succeeded (`_HeldPlan`).
        """
        now = self.clock()
        self._prune_gone(now)
        # A retried call for a pod already holding a reservation is decided afresh, not counted twice.
        in_batch = {t.pod_uid for t in batch if not t.dry_run and t.mode == "reserve"}
        entries: dict[str, QuotaReservation | None] = {}
        allowances: dict[str, AllowanceEntry | None] = {}
        for key, text in data.items():
            if key.startswith(ALLOWANCE_PREFIX):
                allowances[key] = self._decode_allowance(text)
            else:
                entries[key] = self._decode(text)
        # Cache first, then reservations: a pod the cache shows is counted there, never twice.
        base = self.pods.namespace_usage(namespace)
        counted = [(r.assignments, r.memory_min) for uid, r in entries.items()
                   if r is not None and r.expires > now and uid not in in_batch and not self._observed(uid)]
        usage = combined_usage(base, counted)
        holders = 1
        for key, allowance in allowances.items():
            if key != self.replica_key and allowance is not None and allowance.expires > now:
                # A listed pod our cache shows (counted there, finished or deleted) or whose slot died is
                # counted once: slots are never reused, so such a slot stands for nothing uncounted.
                seen: Amount = {}
                for uid, (need, deadline) in allowance.listed.items():
                    if now >= deadline or self._observed(uid):
                        add_amounts(seen, need)
                add_amounts(usage, positive(minus(allowance.amounts, seen)))
                holders += not is_empty(allowance.amounts)
        state = self._held.get(namespace)
        basis = WriteBasis({}, {}, {})
        if state is not None:
            basis = state.basis()
            add_amounts(usage, positive(minus(basis.held, state.settled_part(self._observed, now, self.ttl))))
        verdicts: list[QuotaVerdict] = []
        writes: dict[str, str] = {}
        held_need: Amount = {}
        charges: list[tuple[str, Amount]] = []
        returned: Amount = {}
        entry_quotas: Sequence[Quota] | None = None
        refill = False
        for ticket in batch:
            if ticket.mode in ("refill", "return"):
                verdicts.append(ALLOW)
                entry_quotas = ticket.quotas
                refill |= ticket.mode == "refill"
                add_amounts(returned, ticket.returning)
                continue
            if ticket.mode == "held" and state is not None and state.is_charged(ticket.pod_uid):
                verdicts.append(ALLOW)  # admitted here before (a retry): charged once
                continue
            verdict = evaluate(ticket.quotas, usage, ticket.assignments, ticket.memory_min, namespace)
            verdicts.append(verdict)
            if verdict.admitted and not ticket.dry_run:
                add_usage(usage, ticket.assignments, ticket.memory_min)
                if ticket.mode == "held":
                    add_amounts(held_need, ticket.need)
                    charges.append((ticket.pod_uid, ticket.need))
                    entry_quotas = ticket.quotas
                    refill = True
                else:
                    writes[ticket.pod_uid] = QuotaReservation(ticket.assignments, ticket.memory_min, now + self.ttl,
                                                              now, ticket.pod_name).encode()
        plan: _HeldPlan | None = None
        if entry_quotas is not None:
            plan = self._plan_entry(state, entry_quotas, usage, basis, held_need, returned, charges, refill,
                                    holders, now)
            if is_empty(plan.held):
                data.pop(self.replica_key, None)
            else:
                data[self.replica_key] = AllowanceEntry(plan.held, plan.expires, plan.listed).encode()
        if writes or plan is not None:
            # Prune only when writing anyway: a refusal must not cost a write.
            grace = self.observed_grace if shared else 0.0
            for uid, entry in entries.items():
                if entry is None or entry.expires <= now or (now - entry.created >= grace and self._observed(uid)):
                    del data[uid]
            for key, allowance in allowances.items():
                if key != self.replica_key and (allowance is None or allowance.expires <= now):
                    del data[key]
            data.update(writes)
        return verdicts, plan

    def _plan_entry(self, state: HeldCapacity | None, quotas: Sequence[Quota], usage: Mapping[ClassKey, Usage],
                    basis: WriteBasis, held_need: Amount, returned: Amount, charges: list[tuple[str, Amount]],
                    refill: bool, holders: int, now: float) -> _HeldPlan:
        """Our next allowance: what we held − the slots of released pods − the spare handed back + the batch's
        admitted pods + a prefetch where room is ample. Never below what the request path may be spending."""
        limits = self._limits(quotas) or {}
        extra: Amount = {}
        if refill and limits:
            typical = (state.typical if state is not None and state.typical else
                       charges[-1][1] if charges else {})
            wanted = state.wanted() if state is not None else 8
            extra = prefetch(headroom(limits, usage), typical, wanted, holders)
        held = minus(basis.held, returned, *basis.releasing.values())
        add_amounts(held, held_need)
        add_amounts(held, extra)
        held = limited_part(positive(held), limits)
        listed = {uid: (need, now + self.ttl) for uid, need in reversed(charges)}
        for uid, (need, admitted) in basis.listing.items():
            if len(listed) >= LISTED_MAX:
                break
            listed.setdefault(uid, (need, admitted + self.ttl))
        expires = now + self.ttl if not is_empty(held) else 0.0
        return _HeldPlan(held, expires, tuple(quotas), tuple(charges), returned, basis.releasing,
                         listed if expires else {})

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
            ("qosgate_quota_held_admissions", "Admissions decided against capacity this replica holds ahead "
             "(no ledger write on the request path).", {}, stats.held_admissions),
            ("qosgate_quota_ready", "1 when the pod cache and quota ConfigMaps are synced.", {}, float(self.ready)),
        ]

    def reservations(self, namespace: str) -> dict[str, QuotaReservation]:
        """Live (unexpired) per-pod reservations of a namespace, as the book holds them."""
        now = self.clock()
        found = {uid: QuotaReservation.decode(text) for uid, text in self.books(namespace).read().items()
                 if not uid.startswith(ALLOWANCE_PREFIX)}
        return {uid: r for uid, r in found.items() if r is not None and r.expires > now}

    def held_allowances(self, namespace: str) -> dict[str, AllowanceEntry]:
        """Live allowances of a namespace by replica key, as the book holds them."""
        now = self.clock()
        found = {key: AllowanceEntry.decode(text) for key, text in self.books(namespace).read().items()
                 if key.startswith(ALLOWANCE_PREFIX)}
        return {key: a for key, a in found.items() if a is not None and a.expires > now}
