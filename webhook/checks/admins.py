"""Only admins write qosgate's configuration: quota ConfigMaps (any namespace) and the catalog ConfigMap.

A ConfigMap is guarded when it is the catalog, or when the quota label is on the new *or* the old object:
so adding the label (turning any ConfigMap into a quota), removing it (dropping a quota) and deleting a
labelled ConfigMap (DELETE carries only oldObject) are all writes to a quota. Any value of the label
guards — `qosgate.io/quota: "false"` on a tenant ConfigMap is not a quota, but nobody but an admin needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosgate.core.annotations import QUOTA_LABEL
from qosgate.webhook.admission import AdmissionRequest
from qosgate.webhook.checks import PASS, Finding, deny
from qosgate.webhook.checks.settings import ValidatorSettings

_VERBS = {"CREATE": "create", "UPDATE": "change", "DELETE": "delete", "CONNECT": "connect to"}


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def configmap_name(request: AdmissionRequest) -> str:
    obj = request.object or request.old_object or {}
    return request.name or str(_map(obj.get("metadata")).get("name") or "")


def is_catalog(request: AdmissionRequest, settings: ValidatorSettings) -> bool:
    return request.namespace == settings.catalog_namespace and configmap_name(request) == settings.catalog_name


def has_quota_label(obj: Mapping[str, Any] | None) -> bool:
    return obj is not None and QUOTA_LABEL in _map(_map(obj.get("metadata")).get("labels"))


def guarded_kind(request: AdmissionRequest, settings: ValidatorSettings) -> str | None:
    """"catalog ConfigMap", "quota ConfigMap", or None for a ConfigMap qosgate does not own."""
    if is_catalog(request, settings):
        return "catalog ConfigMap"
    if has_quota_label(request.object) or has_quota_label(request.old_object):
        return "quota ConfigMap"
    return None


def check_writer(request: AdmissionRequest, settings: ValidatorSettings) -> Finding:
    what = guarded_kind(request, settings)
    if what is None or settings.is_admin(request.username, request.groups):
        return PASS
    if request.operation == "DELETE" and request.username in settings.controller_deleters:
        return PASS
    admins = ", ".join(sorted(settings.admin_groups)) or "none"
    return deny(f"only qosgate admins may {_VERBS.get(request.operation, request.operation.lower())} the {what} "
                f"{request.namespace}/{configmap_name(request)}; user {request.username!r} is neither an admin "
                f"user nor in an admin group ({admins})")
