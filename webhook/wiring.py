"""Assemble the webhook for `qosgate serve webhook`: catalog, caches, quota engine, routes, readiness.

With a cluster: the catalog follows its ConfigMap (unless a file is given), the pod and quota-ConfigMap
watch caches feed the quota engine, and quota reservations go through one ledger ConfigMap per namespace
shared by every replica. Without one (`--local`): the catalog alone, no quotas.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qosgate.core.catalog import CatalogHolder
from qosgate.kube.catalog import CatalogSource, open_catalog
from qosgate.serving.http import Route
from qosgate.serving.lifecycle import Lifecycle
from qosgate.serving.metrics import STATE, Sample, cache_samples
from qosgate.webhook.app import webhook_routes
from qosgate.webhook.checks.settings import ValidatorSettings
from qosgate.webhook.quota.engine import DEFAULT_TTL
from qosgate.webhook.validate import build_validator

if TYPE_CHECKING:
    from qosgate.kube.transport import KubeClient

log = logging.getLogger("qosgate.webhook")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Everything the webhook is configured with; built once by the CLI."""

    catalog: CatalogSource = field(default_factory=CatalogSource)
    admin_users: frozenset[str] = frozenset()
    admin_groups: frozenset[str] = frozenset({"system:masters"})
    reservation_ttl: float = DEFAULT_TTL

    def validator_settings(self) -> ValidatorSettings:
        return ValidatorSettings(admin_users=self.admin_users, admin_groups=self.admin_groups,
                                 catalog_namespace=self.catalog.namespace, catalog_name=self.catalog.name)


def quota_samples(quotas: Any, pods: Any, configmaps: Any) -> Callable[[], Iterable[Sample]]:
    """Per namespace/class usage against capacity and maxMemoryMin, computed when Prometheus scrapes.

    Exported for namespaces that have their own quota or pods using a class (where the default applies).
    """

    def provider() -> Iterable[Sample]:
        namespaces = {r["metadata"].get("namespace", "") for r in configmaps.records()}
        namespaces.update(ns for ns in pods.namespaces() if pods.namespace_usage(ns))
        for namespace in sorted(namespaces):
            lookup = quotas.quotas_for(namespace)
            usage = pods.namespace_usage(namespace)
            for quota in lookup.quotas:
                for level in ("pod", "container"):
                    for resource, classes in quota.limits(level).items():
                        for klass, limit in classes.items():
                            used = usage.get((resource, klass))
                            labels = {"namespace": namespace, "resource": resource, "class": klass, "level": level}
                            count = (used.pods if level == "pod" else used.containers) if used else 0
                            yield ("qosgate_quota_used", "Class assignments in use (pods or containers).", labels,
                                   float(count))
                            if limit.capacity:
                                yield ("qosgate_quota_capacity", "Class capacity of the quota (0 = unlimited).",
                                       labels, float(limit.capacity))
                            if limit.max_memory_min is not None:
                                yield ("qosgate_quota_memory_min_used_bytes", "memory.min of pods using the class.",
                                       labels, float(used.memory_min if used else 0))
                                yield ("qosgate_quota_memory_min_cap_bytes", "maxMemoryMin of the class.", labels,
                                       float(limit.max_memory_min))

    return provider


def build_webhook(config: WebhookConfig, lifecycle: Lifecycle, api: KubeClient | None) -> list[Route]:
    """The webhook's routes; starts what they need, registering stoppers and readiness on `lifecycle`."""
    holder: CatalogHolder = open_catalog(config.catalog, api, lifecycle.on_stop)
    settings = config.validator_settings()
    if api is None:
        return webhook_routes(holder, build_validator(holder, None, settings))

    from qosgate.kube.informer import ClusterCache
    from qosgate.webhook.quota.books import ledger_books
    from qosgate.webhook.quota.engine import QuotaEngine
    from qosgate.webhook.quota.source import QuotaSource

    # The catalog in force at start decides the accounting mode of the caches.
    cache = ClusterCache(api, holder.current.accounting, watch_nodes=False, watch_quota_configmaps=True)
    cache.start()
    lifecycle.on_stop(cache.stop)
    lifecycle.readiness.checks["caches synced"] = lambda: cache.ready
    engine = QuotaEngine(cache.pods, QuotaSource(cache.quota_configmaps), ledger_books(api),
                         ttl=config.reservation_ttl)
    # Allowance upkeep (hand back released and idle capacity, renew entries); at shutdown — before the
    # caches stop, stoppers run newest first — the spare goes back so the other replicas can use it at once.
    engine.start_maintenance()
    lifecycle.on_stop(engine.stop)
    STATE.register("quota", engine.samples)
    STATE.register("quota-usage", quota_samples(engine.quotas, cache.pods, cache.quota_configmaps))
    STATE.register("webhook-cache", cache_samples("webhook", cache.stats))
    return webhook_routes(holder, build_validator(holder, engine, settings))
