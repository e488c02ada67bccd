"""The mutating admission decision: a pure function of the decoded request and the catalog."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosgate.core import annotations as keys
from qosgate.core.catalog import Catalog
from qosgate.core.compile import compile_pod
from qosgate.core.errors import InvalidError
from qosgate.webhook.admission import AdmissionRequest, AdmissionResponse
from qosgate.webhook.patch import sync_owned_map

OWNED_LABELS = frozenset({keys.KOORD_QOS_CLASS_LABEL})


def _string_map(value: object) -> dict[str, str] | None:
    return value if isinstance(value, dict) else None


def mutate_pod(pod: Mapping[str, Any], catalog: Catalog) -> AdmissionResponse:
    """Write exactly the owned annotations the catalog computes; strip any a user wrote; idempotent."""
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return AdmissionResponse.deny("metadata: must be an object", code=400, reason="BadRequest")
    try:
        compiled = compile_pod(pod, catalog)
    except InvalidError as exc:
        return AdmissionResponse.deny(f"qosgate: {exc}", code=403)

    annotations = _string_map(metadata.get("annotations"))
    owned_present = {k for k in annotations or () if keys.is_owned_annotation(k)}
    ops = sync_owned_map(annotations, compiled.annotations, owned_present, "/metadata/annotations")

    labels = _string_map(metadata.get("labels"))
    # The koordinator label is ours only for pods that asked for a class under that backend.
    owned_labels = {k for k in labels or () if k in OWNED_LABELS} if compiled.labels else set()
    ops += sync_owned_map(labels, compiled.labels, owned_labels, "/metadata/labels")

    warnings = []
    tampered = sorted(k for k in owned_present
                      if k not in compiled.annotations or annotations[k] != compiled.annotations[k])  # type: ignore[index]
    if tampered:
        warnings.append(f"qosgate replaced annotations only it may set: {', '.join(tampered)}")
    return AdmissionResponse.allow(ops, warnings)


def mutate(request: AdmissionRequest, catalog: Catalog) -> AdmissionResponse:
    if request.kind_name != "Pod" or request.sub_resource or request.object is None:
        return AdmissionResponse.allow()
    return mutate_pod(request.object, catalog)
