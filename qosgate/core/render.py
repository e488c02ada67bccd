"""`qosgate render`: rewrite manifests written with native KEP-3008 fields into the annotation carrier.

Users author `spec.qosResources` / `resources.qosResources` (which today's apiservers drop or reject) and
pipe the result to kubectl: `qosgate render app.yaml | kubectl apply -f -`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosgate.core.annotations import CARRIER_CONTAINER_PREFIX, CARRIER_POD
from qosgate.core.errors import FieldError, InvalidError
from qosgate.core.qosresources import CONTAINER_KINDS, extract_requests
from qosgate.core.workloads import pod_templates


def format_carrier(classes: Mapping[str, str]) -> str:
    return ",".join(f"{name}={klass}" for name, klass in classes.items())


def to_carrier(template: dict[str, Any]) -> None:
    """Move native qosResources of one pod (template) into carrier annotations, in place."""
    requests = extract_requests(template)  # validates, and agrees with any carrier already present
    spec = template.get("spec") or {}
    spec.pop("qosResources", None)
    for kind in CONTAINER_KINDS:
        for container in spec.get(kind) or ():
            resources = container.get("resources") if isinstance(container, dict) else None
            if isinstance(resources, dict):
                resources.pop("qosResources", None)
                if not resources:
                    container.pop("resources")
    if not requests:
        return
    metadata = template.setdefault("metadata", {})
    if not isinstance(metadata.get("annotations"), dict):
        metadata["annotations"] = {}
    annotations = metadata["annotations"]
    if requests.pod:
        annotations[CARRIER_POD] = format_carrier(requests.pod)
    for container, classes in requests.containers.items():
        if classes:
            annotations[CARRIER_CONTAINER_PREFIX + container] = format_carrier(classes)


def render_object(obj: dict[str, Any]) -> dict[str, Any]:
    """Render every pod template in a manifest object in place; InvalidError paths are object-relative."""
    errors: list[FieldError] = []
    for path, template in pod_templates(obj):
        try:
            to_carrier(template)
        except InvalidError as exc:
            errors.extend(FieldError(f"{path}.{e.path}" if path else e.path, e.message) for e in exc.errors)
    if errors:
        raise InvalidError(errors)
    return obj
