"""Group commit per namespace: serial decisions without one API round trip per pod (architecture §4.1.3).

The first request of a namespace becomes the leader, decides every request queued behind it in one batch
(one ledger write) and hands the lead to the first request that arrived meanwhile. Each ticket has its own
event, so finishing a batch wakes exactly its requests and the next leader — not every queued thread.
A request that waited longer than `wait_timeout` gives up with a retryable error rather than running into
the apiserver's webhook timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

# A batch is one ConfigMap write; bound it so one write stays far from the 1 MiB object limit.
MAX_BATCH = 256


@dataclass(slots=True)
class Ticket:
    namespace: str
    error: str | None = None
    done: bool = False
    leader: bool = False
    abandoned: bool = False
    patient: bool = False  # background work (allowance refills and hand-backs): waits for its batch, never gives up
    wake: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class _Lane:
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list[Ticket] = field(default_factory=list)
    busy: bool = False


class GroupCommit:
    """Runs `decide_batch(namespace, tickets)` for batches of tickets, one batch per namespace at a time."""

    def __init__(self, decide_batch: Callable[[str, list[Ticket]], None], wait_timeout: float) -> None:
        self._decide_batch = decide_batch
        self.wait_timeout = wait_timeout
        self._lanes: dict[str, _Lane] = {}
        self._lanes_lock = threading.Lock()

    def _lane(self, namespace: str) -> _Lane:
        lane = self._lanes.get(namespace)
        if lane is None:
            with self._lanes_lock:
                lane = self._lanes.setdefault(namespace, _Lane())
        return lane

    def run(self, ticket: Ticket) -> None:
        """Lead a batch, or wait for a leader to decide this ticket (or hand over the lead)."""
        lane = self._lane(ticket.namespace)
        with lane.lock:
            lane.queue.append(ticket)
            if not lane.busy:
                lane.busy = ticket.leader = True
        if not ticket.leader and not ticket.wake.wait(None if ticket.patient else self.wait_timeout):
            with lane.lock:
                if not ticket.done and not ticket.leader:
                    # Still queued, or in a batch already being decided: either way its caller gives up now.
                    # (A reservation made for it by that batch simply expires: the pod is refused.)
                    ticket.abandoned = True
                    if ticket in lane.queue:
                        lane.queue.remove(ticket)
                    ticket.error = f"namespace {ticket.namespace}: timed out waiting for earlier admissions"
                    return
        if ticket.done:
            return
        with lane.lock:
            batch, lane.queue = lane.queue[:MAX_BATCH], lane.queue[MAX_BATCH:]
        successor: Ticket | None = None
        try:
            self._decide_batch(ticket.namespace, batch)
        finally:
            with lane.lock:
                for item in batch:
                    item.done = True
                if lane.queue:
                    successor = lane.queue[0]
                    successor.leader = True  # hand over: that thread takes the next batch
                else:
                    lane.busy = False
            for item in batch:
                item.wake.set()
            if successor is not None:
                successor.wake.set()
