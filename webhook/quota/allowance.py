"""Capacity this replica holds in one namespace's ledger and spends without an API round trip (architecture §4.1.3).

A ledger write costs what the API server's storage costs (measured against kube-apiserver + etcd on the
test machines: 8–40 ms for a ConfigMap of 100–1,000 entries), and one write per admitted pod caps a busy
namespace at that latency. So a replica asks the ledger for a little more capacity than the pods in hand
(its *allowance*: one entry per replica, written with the same optimistic concurrency as everything else)
and admits the next pods against it locally. Every replica counts every other replica's whole allowance
as used, so what all replicas may admit together never exceeds the quota.

This module is the local bookkeeping only (thread-safe, no I/O). The allowance (`held`, as our ledger entry
says) is split into
- `charged`: pods admitted here whose slot still stands for them;
- `releasing`: pods every replica now counts through its own cache (observed here, `grace` after admission:
  the watch lag tolerated between replicas), or that never appeared within the TTL. Their slots are *not*
  spendable: the pods still exist, and the cache counts them now. The next write hands those slots back;
- `returning`: spare set aside while a write hands it back;
- the spare, the rest: what the request path may spend.
Invariant: charged + releasing + returning ≤ held, in every class and dimension. Writes never lower `held`
below what the request path may be spending meanwhile.

Our entry also lists the pods charged when it was written (up to LISTED_MAX, newest first) with the time
their slot dies if the pod never appears, so a replica whose cache already shows one of them — or shows it
finished or deleted — counts it once, not twice: exact near capacity, where every admission writes anyway.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from qosgate.core.quota import DIMENSIONS, Quota, Usage, add_amounts, covers
from qosgate.core.types import ClassKey

Amount = dict[ClassKey, Usage]
# Pods listed in an entry, newest first. Bounds the entry (about 80 bytes a pod); pods beyond it are merely
# counted twice by replicas that already see them (conservative) until their slot is handed back.
LISTED_MAX = 256


def copy_amount(amount: Mapping[ClassKey, Usage]) -> Amount:
    return {key: Usage(u.pods, u.containers, u.memory_min) for key, u in amount.items()}


def minus(a: Mapping[ClassKey, Usage], *others: Mapping[ClassKey, Usage]) -> Amount:
    result = copy_amount(a)
    for other in others:
        add_amounts(result, other, -1)
    return result


def positive(amount: Mapping[ClassKey, Usage]) -> Amount:
    return {key: Usage(max(0, u.pods), max(0, u.containers), max(0, u.memory_min)) for key, u in amount.items()}


def is_empty(amount: Mapping[ClassKey, Usage]) -> bool:
    return all(not (u.pods or u.containers or u.memory_min) for u in amount.values())


def units(spare: Mapping[ClassKey, Usage], unit: Mapping[ClassKey, Usage]) -> int:
    """How many pods needing `unit` fit in `spare`."""
    fits: int | None = None
    for key, need in unit.items():
        have = spare.get(key, Usage())
        for dimension in DIMENSIONS:
            step = getattr(need, dimension)
            if step > 0:
                count = max(0, getattr(have, dimension)) // step
                fits = count if fits is None else min(fits, count)
    return fits or 0


@dataclass(slots=True)
class Charge:
    uid: str
    need: Amount
    admitted: float


@dataclass(frozen=True, slots=True)
class WriteBasis:
    """What a decision about our next entry starts from (a consistent snapshot)."""

    held: Amount
    releasing: dict[str, Amount]  # uid → need: handed back by this write
    listing: dict[str, tuple[Amount, float]]  # uid → (need, admitted): the charged pods the entry lists


@dataclass(slots=True)
class HeldCapacity:
    """This replica's allowance in one namespace. Every method takes the lock; none does I/O."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    held: Amount = field(default_factory=dict)  # what our ledger entry says (confirmed by a write)
    charged: Amount = field(default_factory=dict)
    releasing: Amount = field(default_factory=dict)
    releasing_uids: dict[str, Amount] = field(default_factory=dict)
    returning: Amount = field(default_factory=dict)
    expires: float = 0.0  # our entry's expiry (wall clock); 0 = no entry
    quotas: tuple[Quota, ...] = ()  # the quota objects the allowance was granted under
    typical: Amount = field(default_factory=dict)  # the limited need of the latest pod: the prefetch unit
    last_admission: float = 0.0
    busy: bool = False  # a refill is queued or running
    charges: deque[Charge] = field(default_factory=deque)  # in admission order
    by_uid: dict[str, Charge] = field(default_factory=dict)
    window_start: float = 0.0  # admissions per second, for the prefetch size
    window_count: int = 0
    rate: float = 0.0

    # --- the request path ----------------------------------------------------------------------------
    def try_spend(self, uid: str, need: Amount, quotas: Sequence[Quota], now: float, margin: float,
                  dry_run: bool) -> bool:
        """Admit against the spare: True when it covers `need` (and then charges it, unless dry-run).

        Only until `margin` before our entry expires: a pod admitted later might still be in flight when other
        replicas stop counting the entry.
        """
        with self.lock:
            if uid in self.by_uid or uid in self.releasing_uids:
                return True  # a retry of a pod already admitted here: it is charged once
            if now >= self.expires - margin or not _same(self.quotas, quotas):
                return False
            if not covers(self._spare(), need):
                return False
            self._note(need, now)
            if not dry_run:
                self._charge(uid, need, now)
            return True

    def is_charged(self, uid: str) -> bool:
        with self.lock:
            return uid in self.by_uid or uid in self.releasing_uids

    def _spare(self) -> Amount:
        return minus(self.held, self.charged, self.releasing, self.returning)

    def spare(self) -> Amount:
        with self.lock:
            return self._spare()

    def _charge(self, uid: str, need: Amount, now: float) -> None:
        charge = Charge(uid, copy_amount(need), now)
        self.charges.append(charge)
        self.by_uid[uid] = charge
        add_amounts(self.charged, need)

    def _note(self, need: Amount, now: float) -> None:
        self.typical = copy_amount(need)
        self.last_admission = now
        if now - self.window_start >= 1.0:
            elapsed = now - self.window_start
            self.rate = self.window_count / elapsed if elapsed < 2.0 else 0.0
            self.window_start, self.window_count = now, 0
        self.window_count += 1

    def wanted(self) -> int:
        """Pods to hold ahead: half a second of the recent admission rate, at least 8."""
        with self.lock:
            return max(8, int(self.rate * 0.5))

    def claim_refill(self) -> bool:
        """True (and marks a refill as queued) when the spare fell below a quarter of what we aim to hold
        ahead and no refill is queued yet: time to ask for more, off the request path."""
        with self.lock:
            if not self.typical or self.busy:
                return False
            if units(self._spare(), self.typical) >= max(2, int(self.rate * 0.5) // 4):
                return False
            self.busy = True
            return True

    def refill_done(self) -> None:
        with self.lock:
            self.busy = False

    # --- releases ------------------------------------------------------------------------------------
    def release_due(self, now: float, observed: Callable[[str], bool], grace: float, ttl: float) -> int:
        """Move charges whose pods every replica counts by now (or that never appeared) to `releasing`.
        Oldest first; a pod not yet observed holds back the younger ones (conservative), until its TTL."""
        released = 0
        with self.lock:
            while self.charges:
                charge = self.charges[0]
                age = now - charge.admitted
                if not (age >= ttl or (age >= grace and observed(charge.uid))):
                    break
                self.charges.popleft()
                self.by_uid.pop(charge.uid, None)
                add_amounts(self.charged, charge.need, -1)
                add_amounts(self.releasing, charge.need)
                self.releasing_uids[charge.uid] = charge.need
                released += 1
        return released

    def settled_part(self, observed: Callable[[str], bool], now: float, ttl: float) -> Amount:
        """Σ needs of our slots that no longer stand for an uncounted pod: the pod is in the cache (counted
        there), finished or deleted, or never appeared within the TTL — and every releasing slot. Slots are
        never reused (a released slot is handed back), so such a slot is dead until the next write drops it."""
        total: Amount = {}
        with self.lock:
            for charge in self.charges:
                if now - charge.admitted >= ttl or observed(charge.uid):
                    add_amounts(total, charge.need)
            for need in self.releasing_uids.values():
                add_amounts(total, need)
        return total

    def has_work(self) -> bool:
        """Anything a write should do: slots to hand back, or an entry to keep alive."""
        with self.lock:
            return bool(self.releasing_uids) or not is_empty(self.held)

    # --- writes --------------------------------------------------------------------------------------
    def basis(self) -> WriteBasis:
        with self.lock:
            listing = {c.uid: (c.need, c.admitted) for c in reversed(self.charges)}
            if len(listing) > LISTED_MAX:
                listing = dict(list(listing.items())[:LISTED_MAX])
            return WriteBasis(copy_amount(self.held), dict(self.releasing_uids), listing)

    def snapshot(self) -> tuple[Amount, float]:
        with self.lock:
            return copy_amount(self.held), self.expires

    def set_aside(self, amount: Amount) -> None:
        """Stop spending `amount` of the spare: a write is about to hand it back."""
        with self.lock:
            add_amounts(self.returning, amount)

    def granted(self, held: Amount, expires: float, quotas: Sequence[Quota], charges: Sequence[tuple[str, Amount]],
                returned: Amount, released: Mapping[str, Amount], now: float) -> None:
        """A write succeeded: our entry now says `held`; the batch's pods are charged, the released slots and
        the returned spare are gone from it."""
        with self.lock:
            self.held = copy_amount(held)
            self.expires = expires
            self.quotas = tuple(quotas)
            add_amounts(self.returning, returned, -1)
            for uid, need in released.items():
                if self.releasing_uids.pop(uid, None) is not None:
                    add_amounts(self.releasing, need, -1)
            for uid, need in charges:
                if uid not in self.by_uid and uid not in self.releasing_uids:
                    self._note(need, now)
                    self._charge(uid, need, now)

    def failed(self, returned: Amount) -> None:
        """A write failed: what was set aside is spendable again (our entry did not change)."""
        with self.lock:
            add_amounts(self.returning, returned, -1)


def _same(a: Sequence[Quota], b: Sequence[Quota]) -> bool:
    """The quota source hands out the same parsed objects until a quota ConfigMap changes."""
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b, strict=True))
