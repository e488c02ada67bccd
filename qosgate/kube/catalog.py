"""Where the class catalog comes from, resolved in one place for every component (architecture §4.4).

A catalog source is a file (fixed for the process), the cluster's catalog ConfigMap (watched: every valid
version replaces the catalog in force, an invalid one is logged and the last valid one stays), or — with
neither, or without a cluster — the built-in catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qosgate.core.annotations import CATALOG_CONFIGMAP, SYSTEM_NAMESPACE
from qosgate.core.catalog import Catalog, CatalogHolder, catalog_from_configmap, load_catalog_yaml
from qosgate.core.errors import InvalidError, QosgateError
from qosgate.kube.rest import ApiError, request_json

if TYPE_CHECKING:
    from qosgate.kube.transport import KubeClient

log = logging.getLogger("qosgate.kube.catalog")

DEFAULT_CATALOG_REF = f"{SYSTEM_NAMESPACE}/{CATALOG_CONFIGMAP}"
# How long a starting component waits for the catalog ConfigMap before deciding with what it has.
CATALOG_SYNC_TIMEOUT = 30.0


def catalog_ref(value: str | None) -> tuple[str, str]:
    """Split `--catalog-configmap NS/NAME` (default qosgate-system/qosgate-classes)."""
    ref = value or DEFAULT_CATALOG_REF
    namespace, slash, name = ref.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise QosgateError(f"--catalog-configmap {ref!r}: expected NAMESPACE/NAME")
    return namespace, name


@dataclass(frozen=True, slots=True)
class CatalogSource:
    """A catalog file, else the ConfigMap `namespace/name` (when a cluster is at hand), else built-in."""

    file: str | None = None
    namespace: str = SYSTEM_NAMESPACE
    name: str = CATALOG_CONFIGMAP

    @classmethod
    def of(cls, file: str | None = None, configmap: str | None = None) -> CatalogSource:
        if file and configmap:
            raise QosgateError("--catalog and --catalog-configmap exclude each other")
        namespace, name = catalog_ref(configmap)
        return cls(file or None, namespace, name)


def load_catalog_file(path: str) -> Catalog:
    """A catalog YAML file; InvalidError naming the file and every bad field."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise InvalidError.single(path, f"cannot read catalog: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InvalidError.single(path, f"catalog is not UTF-8 text (byte {exc.start}): expected YAML") from None
    return load_catalog_yaml(text, path)


def fetch_catalog(api: KubeClient, namespace: str, name: str) -> Catalog | None:
    """The ConfigMap's catalog; None when it does not exist or is invalid (logged: the caller keeps its own)."""
    try:
        configmap = request_json(api, "GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
    except ApiError as exc:
        if exc.not_found:
            return None
        raise QosgateError(f"cannot read the catalog ConfigMap {namespace}/{name}: {exc}") from None
    try:
        return catalog_from_configmap(configmap)
    except InvalidError as exc:
        log.error("catalog ConfigMap %s/%s is invalid; using the built-in catalog", namespace, name,
                  extra={"detail": str(exc)})
        return None


def watch_catalog(api: KubeClient, holder: CatalogHolder, namespace: str, name: str) -> Any:
    """Keep `holder` on the newest valid catalog ConfigMap; returns the started informer."""
    from qosgate.kube.informer import Informer
    from qosgate.kube.store import ObjectStore

    store = ObjectStore()

    def on_change(_old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None:
            log.warning("catalog ConfigMap %s/%s deleted: keeping the catalog in force", namespace, name)
            return
        error = holder.update_from_configmap(new, f"configmap {namespace}/{name}")
        if error:
            log.error("catalog ConfigMap rejected, keeping the last valid catalog", extra={"detail": error})
        else:
            log.info("catalog loaded from configmap %s/%s", namespace, name)

    store.subscribe(on_change)
    informer = Informer(api, f"/api/v1/namespaces/{namespace}/configmaps", store,
                        field_selector=f"metadata.name={name}", name="catalog")
    informer.start()
    return informer


def open_catalog(source: CatalogSource, api: KubeClient | None, on_stop: Callable[[Callable[[], object]], None],
                 sync_timeout: float = CATALOG_SYNC_TIMEOUT) -> CatalogHolder:
    """The catalog holder a component decides with; with a cluster and no file it follows the ConfigMap."""
    if source.file:
        return CatalogHolder(load_catalog_file(source.file), source.file)
    holder = CatalogHolder()
    if api is None:
        return holder
    informer = watch_catalog(api, holder, source.namespace, source.name)
    on_stop(informer.stop)
    if not informer.wait_for_sync(sync_timeout):
        log.warning("catalog ConfigMap %s/%s not synced after %.0fs; starting with %s", source.namespace,
                    source.name, sync_timeout, holder.source)
    return holder
