"""Assemble the extender for `qosgate serve extender`: catalog, caches, state, binder, leader election.

Settings come from the class catalog (protectablePercent, and the accounting its backends imply,
architecture §5) and from the typed configuration the CLI builds (strategy, reservation TTL, leader
election, client authentication). The catalog is followed live: a new valid version swaps the settings
under the decision lock (`ExtenderState.set_settings`, architecture §4.2.4), so every filter or bind sees
one rule or the other, never a mix; `--strategy` and `--reservation-ttl` take a restart.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from qosgate.core.annotations import EXTENDER_STATE
from qosgate.core.catalog import Catalog, CatalogHolder
from qosgate.core.nodefit import Strategy, protectable
from qosgate.extender.app import extender_routes
from qosgate.extender.binder import KubeBinder
from qosgate.extender.forward import LEADER_URL_ANNOTATION, LeaderForwarder
from qosgate.extender.state import BindOutcome, BindResult, ExtenderSettings, ExtenderState
from qosgate.kube.catalog import CatalogSource, open_catalog
from qosgate.kube.store import NodeStore, PodStore
from qosgate.serving.client import KeepAliveClient, client_context
from qosgate.serving.http import Route
from qosgate.serving.lifecycle import Lifecycle
from qosgate.serving.metrics import STATE, Sample, cache_samples

if TYPE_CHECKING:
    from qosgate.kube.transport import KubeClient

log = logging.getLogger("qosgate.extender")


@dataclass(frozen=True, slots=True)
class LeaderElection:
    namespace: str
    name: str
    identity: str
    # Short enough that a crashed leader is replaced within seconds (a graceful one releases at once).
    lease_duration: float = 5.0
    renew_deadline: float = 3.5
    retry_period: float = 1.0


@dataclass(frozen=True, slots=True)
class PeerAccess:
    """How a follower reaches the leader: the URL the leader advertises, and the TLS to call it with."""

    advertise_url: str  # this replica's own extender URL as peers reach it, e.g. https://10.0.3.7:8444
    ca_file: str
    server_name: str  # the name in the serving certificate (the Service's DNS name)
    cert_file: str  # a client certificate the extenders' client CA accepts
    key_file: str


@dataclass(frozen=True, slots=True)
class ExtenderConfig:
    """Everything the extender is configured with; built once by the CLI."""

    catalog: CatalogSource = field(default_factory=CatalogSource)
    strategy: Strategy = "spread"
    reservation_ttl: float = 30.0
    leader_election: LeaderElection | None = None
    # Followers forward the verbs to the leader instead of refusing them (architecture §4.2.1).
    peers: PeerAccess | None = None
    # Refuse the verbs to callers without a TLS client certificate from the client CA (architecture §6.2).
    client_certificate_required: bool = False


class NoAPIBinder:
    """--local has no API server to bind through: every bind is refused, clearly."""

    def bind(self, namespace: str, name: str, uid: str, node: str) -> BindResult:
        return BindResult(BindOutcome.REJECTED, "qosgate runs with --local: there is no API server to bind "
                                                f"{namespace}/{name} through")


def settings_from(catalog: Catalog, config: ExtenderConfig) -> ExtenderSettings:
    return ExtenderSettings(protectable_percent=catalog.protectable_percent, accounting=catalog.accounting,
                            kubelet_policy=catalog.kubelet_policy, strategy=config.strategy,
                            reservation_ttl=config.reservation_ttl)


def follow_catalog(holder: CatalogHolder, state: ExtenderState, config: ExtenderConfig) -> None:
    """Every catalog that comes into force changes the extender's rules at once (architecture §4.4)."""

    def apply(catalog: Catalog) -> None:
        state.set_settings(settings_from(catalog, config))
        log.info("extender follows the new catalog: protectablePercent %d, kubelet policy %s",
                 catalog.protectable_percent, state.settings.default_policy)

    holder.subscribe(apply)


def state_samples(state: ExtenderState, nodes: NodeStore, pods: PodStore) -> Callable[[], Iterable[Sample]]:
    """Per-node protected/protectable bytes and reservations, computed when Prometheus scrapes."""

    def provider() -> Iterable[Sample]:
        percent = state.settings.protectable_percent
        for name in nodes.names():
            node = nodes.get(name)
            if node is None:
                continue
            labels = {"node": name}
            yield ("qosgate_node_protectable_bytes", "memory.min the node can protect.", labels,
                   float(protectable(node, percent)))
            bound, _reserved = state.node_usage(name)
            yield ("qosgate_node_protected_bytes", "Summed memory.min of active pods bound to the node.", labels,
                   float(bound))
        yield ("qosgate_extender_reservations", "Binds reserved and not yet visible on the watch.", {},
               float(len(state.reservations())))

    return provider


def _freeze_after_sync(cache: Any) -> None:
    """Once the first LIST is in, move the ~150,000 long-lived records out of the cyclic GC's sight.

    Records hold no cycles (reference counting frees them), but every full collection would still walk
    them all: tens of milliseconds that land on some unlucky filter's p99.
    """
    if cache.wait_for_sync():
        gc.collect()
        gc.freeze()


def build_extender(config: ExtenderConfig, lifecycle: Lifecycle, api: KubeClient | None) -> list[Route]:
    """The extender's routes; starts what they need, registering stoppers and readiness on `lifecycle`."""
    holder = open_catalog(config.catalog, api, lifecycle.on_stop)
    settings = settings_from(holder.current, config)
    if api is None:
        # No cluster: empty caches, judged as synced; nodes arrive in full with the `Nodes` form of calls.
        pods, nodes = PodStore(settings.accounting), NodeStore()
        pods.replace([], "")
        nodes.replace([], "")
        state = ExtenderState(pods, nodes, settings)
        return extender_routes(state, NoAPIBinder(), lifecycle.readiness, config.client_certificate_required)

    from qosgate.kube.informer import ClusterCache
    from qosgate.kube.leader import CatchUpBarrier, LeaderElector

    cache = ClusterCache(api, settings.accounting, watch_node_reports=True)
    state = ExtenderState(cache.pods, cache.nodes, settings, reports=cache.node_reports)
    follow_catalog(holder, state, config)
    cache.start()
    threading.Thread(target=_freeze_after_sync, args=(cache,), name="extender-gc-freeze", daemon=True).start()
    lifecycle.on_stop(cache.stop)
    lifecycle.readiness.checks["extender caches synced"] = lambda: cache.ready
    STATE.register("extender", state_samples(state, cache.nodes, cache.pods))
    STATE.register("extender-cache", cache_samples("extender", cache.stats))
    election = config.leader_election
    if election is None:
        return extender_routes(state, KubeBinder(api), lifecycle.readiness, config.client_certificate_required)
    # Reservations are not cleared on leadership changes: a stale one is conservative and confirms or
    # expires on its own, while clearing could forget a bind of ours that is still landing.
    pod_store = cache.pods
    barrier = CatchUpBarrier(api, lambda: pod_store.resource_version)
    peers = config.peers
    def lease_annotations() -> dict[str, str]:
        notes = {EXTENDER_STATE: orjson.dumps({"synced": cache.ready, "caughtUp": barrier.open,
                                               "reserved": state.reserved_by_node()}).decode()}
        if peers is not None:
            notes[LEADER_URL_ANNOTATION] = peers.advertise_url
        return notes

    elector = LeaderElector(api, election.namespace, election.name, election.identity,
                            lease_duration=election.lease_duration, renew_deadline=election.renew_deadline,
                            retry_period=election.retry_period,
                            on_started_leading=barrier.on_started_leading,
                            on_stopped_leading=barrier.on_stopped_leading, annotations=lease_annotations)
    elector.start()
    lifecycle.on_stop(elector.stop)
    STATE.register("extender-leader", lambda: [(
        "qosgate_extender_leader", "1 on the replica holding the extender Lease (it decides; the others relay).",
        {}, float(elector.is_leader))])

    def decides() -> bool:
        return cache.ready and elector.is_leader and barrier.open

    forwarder = None
    if peers is None:
        # Without peers only the leader answers: readiness says so, and the Service routes to it alone.
        lifecycle.readiness.checks["extender lease held"] = lambda: elector.is_leader
        lifecycle.readiness.checks["extender caught up since winning the lease"] = lambda: barrier.open
    else:
        context = client_context(peers.ca_file, peers.cert_file, peers.key_file)
        forwarder = LeaderForwarder(elector, peers.advertise_url,
                                    lambda url: KeepAliveClient(url, context, peers.server_name))
        lifecycle.on_stop(forwarder.close)
    return extender_routes(state, KubeBinder(api), decides, config.client_certificate_required, forwarder)
