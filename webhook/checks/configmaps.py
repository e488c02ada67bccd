"""The content of qosgate's ConfigMaps: an invalid catalog or quota is refused with every bad field named.

A rejected catalog would be ignored by the webhooks anyway (the last valid one stays in force), and an
invalid quota makes its namespace fail closed for pods asking for a class — refusing the write tells the
admin at `kubectl apply` time instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosgate.core.annotations import QUOTA_LABEL
from qosgate.core.catalog import Catalog, catalog_from_configmap
from qosgate.core.errors import InvalidError
from qosgate.core.quota import QUOTA_LABEL_VALUE, quota_from_configmap
from qosgate.webhook.admission import AdmissionRequest
from qosgate.webhook.checks import PASS, Finding, deny, warn
from qosgate.webhook.checks.admins import configmap_name, is_catalog
from qosgate.webhook.checks.settings import ValidatorSettings


def _with_identity(request: AdmissionRequest) -> Mapping[str, Any]:
    """The object with namespace and name filled in, so messages cite it (CREATE may omit the namespace)."""
    obj = dict(request.object or {})
    found = obj.get("metadata")
    metadata = dict(found) if isinstance(found, dict) else {}
    metadata.setdefault("namespace", request.namespace)
    metadata.setdefault("name", configmap_name(request))
    obj["metadata"] = metadata
    return obj


def unknown_classes(quota_classes: list[tuple[str, str]], catalog: Catalog) -> list[str]:
    found = []
    for resource, klass in quota_classes:
        known = catalog.resources.get(resource)
        if known is None:
            found.append(f"{resource} (not in the catalog)")
        elif klass not in known.classes:
            found.append(f"{resource} class {klass} (not in the catalog)")
    return found


def check_configmap_content(request: AdmissionRequest, settings: ValidatorSettings, catalog: Catalog) -> Finding:
    if request.operation not in ("CREATE", "UPDATE") or request.object is None:
        return PASS
    obj = _with_identity(request)
    if is_catalog(request, settings):
        try:
            catalog_from_configmap(obj)
        except InvalidError as exc:
            return deny(*(f"invalid catalog: {error}" for error in exc.errors))
        return PASS
    labels = obj["metadata"].get("labels")
    value = labels.get(QUOTA_LABEL) if isinstance(labels, dict) else None
    if value is None:
        return PASS
    if value != QUOTA_LABEL_VALUE:
        return warn(f"label {QUOTA_LABEL}={value!r} is not a quota; only {QUOTA_LABEL}: \"true\" takes effect")
    try:
        quota = quota_from_configmap(obj)
    except InvalidError as exc:
        return deny(*(f"invalid quota: {error}" for error in exc.errors))
    # The catalog may gain the class later, so this is advice, not a refusal.
    unknown = unknown_classes(quota.class_names(), catalog)
    if unknown:
        return warn(f"quota lists {', '.join(unknown)}; pods cannot ask for it yet")
    return PASS
