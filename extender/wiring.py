"""Assemble the extender for `qosgate serve extender`: caches, state, binder, leader election, readiness.

Settings come from the class catalog (protectablePercent, and the accounting its backends imply, DESIGN §8)
and from the serve flags (strategy, reservation TTL, leader election). The catalog is read once at start:
changing protectablePercent takes a restart, so all decisions of one process use one rule.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI

from qosgate.core.catalog import DEFAULT_CATALOG, Catalog, load_catalog_file
from qosgate.core.nodefit import protectable
from qosgate.extender.app import create_extender_app
from qosgate.extender.binder import KubeBinder
from qosgate.extender.state import BindOutcome, BindResult, ExtenderSettings, ExtenderState
from qosgate.kube.store import NodeStore, PodStore
from qosgate.serving.metrics import STATE, Sample, cache_samples

log = logging.getLogger("qosgate.extender")


class NoAPIBinder:
    """--local has no API server to bind through: every bind is refused, clearly."""

    def bind(self, namespace: str, name: str, uid: str, node: str) -> BindResult:
        return BindResult(BindOutcome.REJECTED, "qosgate runs with --local: there is no API server to bind "
                                                f"{namespace}/{name} through")


def settings_from(catalog: Catalog, strategy: str = "spread", reservation_ttl: float = 30.0) -> ExtenderSettings:
    return ExtenderSettings(protectable_percent=catalog.protectable_percent,
                            accounting=catalog.accounting,  # type: ignore[arg-type]
                            strategy=strategy,  # type: ignore[arg-type]
                            reservation_ttl=reservation_ttl)


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
            yield ("qosgate_node_protected_bytes", "Summed memory.min of active pods bound to the node.", labels,
                   float(pods.node_memory_min(name)))
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


class CatchUpBarrier:
    """After winning the Lease, serve only once the pod cache has seen everything up to that moment.

    The previous leader's last binds may still be in flight on our watch: deciding before they arrive could
    double-book their nodes. A quorum read (LIST limit=1, no resourceVersion) gives the API's current
    resourceVersion; the barrier opens when the pod store has reached it (events or bookmarks).
    resourceVersions are compared as integers, which holds for etcd-backed servers; a non-numeric one, or a
    wait beyond `max_wait` (a quiet cluster sends bookmarks only about once a minute), opens it with a warning.
    """

    def __init__(self, api: Any, pods: PodStore, max_wait: float = 90.0, poll: float = 0.05):
        self.api, self.pods, self.max_wait, self.poll = api, pods, max_wait, poll
        self._generation = 0
        self._open = threading.Event()

    @property
    def open(self) -> bool:
        return self._open.is_set()

    def on_started_leading(self) -> None:
        self._generation += 1
        self._open.clear()
        threading.Thread(target=self._wait, args=(self._generation,), name="extender-catch-up", daemon=True).start()

    def on_stopped_leading(self) -> None:
        self._generation += 1
        self._open.clear()

    def _wait(self, generation: int) -> None:
        from qosgate.kube.rest import KubeError, request_json

        deadline = time.monotonic() + self.max_wait
        target: int | None = None
        while target is None and time.monotonic() < deadline and generation == self._generation:
            try:
                listed = request_json(self.api, "GET", "/api/v1/pods", query=[("limit", "1")])
                target = int(listed.get("metadata", {}).get("resourceVersion", ""))
            except ValueError:
                break  # not an integer: cannot compare, open below
            except KubeError as exc:
                log.warning("catch-up read failed, retrying: %s", exc)
                time.sleep(1.0)
        while target is not None and time.monotonic() < deadline and generation == self._generation:
            current = self.pods.resource_version
            if current.isdigit() and int(current) >= target:
                break
            time.sleep(self.poll)
        if generation != self._generation:
            return
        if target is None or time.monotonic() >= deadline:
            log.warning("serving as leader without a confirmed catch-up of the pod watch")
        self._open.set()


def build_extender_app(args: argparse.Namespace, runtime: Any, api: Any | None) -> FastAPI:
    """The extender app; starts what it needs and registers stoppers and readiness checks on `runtime`.

    `runtime` is qosgate.cli.serve.Runtime (readiness: Readiness with `.checks`, stoppers: list of callables);
    `api` is a kubernetes ApiClient, or None with --local.
    """
    catalog = load_catalog_file(args.catalog) if getattr(args, "catalog", None) else DEFAULT_CATALOG
    settings = settings_from(catalog, getattr(args, "strategy", "spread"), getattr(args, "reservation_ttl", 30.0))
    if api is None:
        # No cluster: empty caches, judged as synced; nodes arrive in full with the `Nodes` form of calls.
        pods, nodes = PodStore(settings.accounting), NodeStore()
        pods.replace([], "")
        nodes.replace([], "")
        state = ExtenderState(pods, nodes, settings)
        return create_extender_app(state, NoAPIBinder(), runtime.readiness)

    from qosgate.kube.catalog import catalog_ref, fetch_catalog
    from qosgate.kube.informer import ClusterCache
    from qosgate.kube.leader import LeaderElector

    if not getattr(args, "catalog", None):
        # The cluster's catalog decides protectablePercent and the accounting mode; read once (restart to change).
        cluster_catalog = fetch_catalog(api, *catalog_ref(getattr(args, "catalog_configmap", None)))
        if cluster_catalog is not None:
            settings = settings_from(cluster_catalog, getattr(args, "strategy", "spread"),
                                     getattr(args, "reservation_ttl", 30.0))
    cache = ClusterCache(api, settings.accounting)
    state = ExtenderState(cache.pods, cache.nodes, settings)
    cache.start()
    threading.Thread(target=_freeze_after_sync, args=(cache,), name="extender-gc-freeze", daemon=True).start()
    runtime.stoppers.append(cache.stop)
    runtime.readiness.checks["extender caches synced"] = lambda: cache.ready
    STATE.register("extender", state_samples(state, cache.nodes, cache.pods))
    STATE.register("extender-cache", cache_samples("extender", cache.stats))
    if getattr(args, "leader_elect", False):
        identity = os.environ.get("POD_NAME") or socket.gethostname()
        # Reservations are not cleared on leadership changes: a stale one is conservative and confirms or
        # expires on its own, while clearing could forget a bind of ours that is still landing.
        barrier = CatchUpBarrier(api, cache.pods)
        elector = LeaderElector(api, args.lease_namespace, args.lease_name, identity,
                                on_started_leading=barrier.on_started_leading,
                                on_stopped_leading=barrier.on_stopped_leading)
        elector.start()
        runtime.stoppers.append(elector.stop)
        runtime.readiness.checks["extender lease held"] = lambda: elector.is_leader
        runtime.readiness.checks["extender caught up since winning the lease"] = lambda: barrier.open
    return create_extender_app(state, KubeBinder(api), runtime.readiness)
