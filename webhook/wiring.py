"""Assemble the webhook for `qosgate serve webhook`: catalog source, caches, quota engine, readiness, metrics.

Cluster mode watches the pods (usage), the quota ConfigMaps, and — unless `--catalog FILE` is given — the
catalog ConfigMap, whose valid versions replace the catalog in force (an invalid one is logged and the last
valid catalog stays). The accounting mode (annotated / kubelet) is fixed by the catalog at start-up: changing
the backend to or from kubelet takes a restart.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI

from qosgate.core.catalog import CatalogHolder, load_catalog_file
from qosgate.kube.catalog import catalog_ref
from qosgate.serving.metrics import STATE, Sample, cache_samples
from qosgate.webhook.app import create_webhook_app
from qosgate.webhook.checks.settings import ValidatorSettings
from qosgate.webhook.validate import add_validate_route, build_validator

log = logging.getLogger("qosgate.webhook")


def settings_from_args(args: argparse.Namespace) -> ValidatorSettings:
    namespace, name = catalog_ref(getattr(args, "catalog_configmap", None))
    groups = frozenset(g.strip() for g in (getattr(args, "admin_groups", "") or "").split(",") if g.strip())
    users = frozenset(u.strip() for u in (getattr(args, "admin_users", "") or "").split(",") if u.strip())
    return ValidatorSettings(admin_users=users, admin_groups=groups, catalog_namespace=namespace,
                             catalog_name=name)


def watch_catalog(api: Any, holder: CatalogHolder, namespace: str, name: str) -> Any:
    """Keep `holder` on the newest valid catalog ConfigMap; returns the started informer."""
    from qosgate.kube.informer import Informer
    from qosgate.kube.store import ObjectStore

    store = ObjectStore()

    def on_change(_old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None:
            log.warning("catalog ConfigMap %s/%s deleted: keeping the catalog in force", namespace, name)
            return
        error = holder.update_from_configmap(new)
        if error:
            log.error("catalog ConfigMap rejected, keeping the last valid catalog", extra={"detail": error})
        else:
            holder.source = f"configmap {namespace}/{name}"
            log.info("catalog loaded from configmap %s/%s", namespace, name)

    store.subscribe(on_change)
    informer = Informer(api, f"/api/v1/namespaces/{namespace}/configmaps", store,
                        field_selector=f"metadata.name={name}", name="catalog")
    informer.start()
    return informer


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


def build_webhook_app(args: argparse.Namespace, runtime: Any, api: Any | None) -> FastAPI:
    """The webhook app; registers stoppers and readiness checks on `runtime` (qosgate.cli.serve.Runtime)."""
    holder = CatalogHolder(load_catalog_file(args.catalog), args.catalog) if args.catalog else CatalogHolder()
    settings = settings_from_args(args)
    app = create_webhook_app(holder, is_ready=runtime.readiness)
    if api is None:
        add_validate_route(app, build_validator(holder, None, settings))
        return app

    from qosgate.kube.informer import ClusterCache
    from qosgate.webhook.quota_engine import QuotaEngine, QuotaSource, ledger_books

    if not args.catalog:
        catalog_informer = watch_catalog(api, holder, settings.catalog_namespace, settings.catalog_name)
        runtime.stoppers.append(catalog_informer.stop)
        # The catalog decides the accounting mode of the caches: wait briefly for the ConfigMap, if any.
        catalog_informer.wait_for_sync(30.0)
    cache = ClusterCache(api, holder.current.accounting, watch_nodes=False, watch_quota_configmaps=True)
    cache.start()
    runtime.stoppers.append(cache.stop)
    runtime.readiness.checks["caches synced"] = lambda: cache.ready
    engine = QuotaEngine(cache.pods, QuotaSource(cache.quota_configmaps), ledger_books(api),
                         ttl=args.reservation_ttl)
    STATE.register("quota", engine.samples)
    STATE.register("quota-usage", quota_samples(engine.quotas, cache.pods, cache.quota_configmaps))
    STATE.register("webhook-cache", cache_samples("webhook", cache.stats))
    add_validate_route(app, build_validator(holder, engine, settings))
    return app
