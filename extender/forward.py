"""Every ready extender replica answers kube-scheduler; only the Lease holder decides (architecture §4.2.1).

Why forward instead of marking only the leader ready. With readiness tied to leadership, the Service has one
endpoint: a rolling update, a drain of the leader's node or a leader crash leaves kube-scheduler with no
endpoint until another replica wins the Lease *and* the endpoint controller publishes it, and a
PodDisruptionBudget at 2 replicas can never allow an eviction (one replica is always "unavailable"). Here
every replica with synced caches is ready; a follower forwards the verb, body untouched, to the leader's
own address, which the leader writes on the Lease (annotation `qosgate.io/leader-url`). The decision —
reservations included — stays in one process, so nothing about exactness changes; the cost is one loopback-
or pod-network hop for the calls that land on a follower.

When there is no leader to forward to (it died and its Lease has not expired, or no replica has won yet),
the verb is answered with the wire's `Error` field; kube-scheduler retries the pod. A leader that stops
gracefully releases the Lease at once, so a successor takes over within one retry period.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol

from qosgate.core.annotations import LEADER_URL
from qosgate.serving.client import KeepAliveClient, PeerUnavailable
from qosgate.serving.http import JSON, Response
from qosgate.serving.metrics import EXTENDER_FORWARDED

log = logging.getLogger("qosgate.extender")

LEADER_URL_ANNOTATION = LEADER_URL


class LeaseView(Protocol):
    """What the forwarder reads of leader election (qosgate.kube.leader.LeaderElector)."""

    @property
    def is_leader(self) -> bool: ...

    def holder_annotation(self, key: str) -> str: ...


@functools.cache
def _counted(verb: str, outcome: str) -> Any:
    return EXTENDER_FORWARDED.labels(verb, outcome)


class LeaderForwarder:
    """Sends a verb's body to the leader and relays its answer; `client_for(url)` makes the HTTPS client."""

    def __init__(self, lease: LeaseView, own_url: str, client_for: Callable[[str], KeepAliveClient]) -> None:
        self.lease = lease
        self.own_url = own_url
        self._client_for = client_for
        self._client: KeepAliveClient | None = None

    def leader_url(self) -> str:
        """Where the current leader answers; "" when this replica leads or no leader is known."""
        if self.lease.is_leader:
            return ""
        url = self.lease.holder_annotation(LEADER_URL_ANNOTATION)
        return "" if url == self.own_url else url

    def forward(self, verb: str, body: bytes, refuse: Callable[[str], bytes]) -> Response:
        """The leader's answer, or a refusal in the wire's shape when it cannot be reached (blocking)."""
        url = self.leader_url()
        if not url:
            _counted(verb, "no_leader").inc()
            return Response(200, refuse("no qosgate extender replica is leading right now (the Lease is being "
                                        "handed over); the scheduler will retry"), JSON)
        client = self._client
        if client is None or client.url != url:
            if client is not None:
                client.close()
            client = self._client = self._client_for(url)
        try:
            status, payload = client.post(f"/{verb}", body)
        except PeerUnavailable as exc:
            _counted(verb, "unreachable").inc()
            log.warning("forwarding %s to the leader at %s failed: %s", verb, url, exc)
            return Response(200, refuse(f"the leading qosgate extender replica at {url} did not answer; the "
                                        "scheduler will retry"), JSON)
        _counted(verb, "forwarded").inc()
        return Response(status, payload, JSON)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
