"""The catalog ConfigMap as the components read it at start-up (the webhook also watches it afterwards)."""

from __future__ import annotations

import logging
from typing import Any

from qosgate.core.annotations import CATALOG_CONFIGMAP, SYSTEM_NAMESPACE
from qosgate.core.catalog import Catalog, catalog_from_configmap
from qosgate.core.errors import InvalidError, QosgateError
from qosgate.kube.rest import ApiError, request_json

log = logging.getLogger("qosgate.core.catalog")

DEFAULT_CATALOG_REF = f"{SYSTEM_NAMESPACE}/{CATALOG_CONFIGMAP}"


def catalog_ref(value: str | None) -> tuple[str, str]:
    """Split `--catalog-configmap NS/NAME` (default qosgate-system/qosgate-classes)."""
    ref = value or DEFAULT_CATALOG_REF
    namespace, slash, name = ref.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise QosgateError(f"--catalog-configmap {ref!r}: expected NAMESPACE/NAME")
    return namespace, name


def fetch_catalog(api: Any, namespace: str, name: str) -> Catalog | None:
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
