"""A pod's QoS classes are immutable (architecture §2.4): on UPDATE nothing that states or renders them may change.

Compared with oldObject, not recomputed from the catalog: a catalog edit must not make every later
metadata update of a running pod (labels, finalizers, owner references) fail, and what the node applied at
container start is what the old annotations say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosgate.core import annotations as keys
from qosgate.core.qosresources import CONTAINER_KINDS
from qosgate.webhook.checks import PASS, Finding, deny

_OWNED_LABELS = (keys.KOORD_QOS_CLASS_LABEL,)
_SHOWN = 40


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _show(value: object) -> str:
    if value is None:
        return "absent"
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _class_annotations(pod: Mapping[str, Any]) -> dict[str, object]:
    annotations = _map(_map(pod.get("metadata")).get("annotations"))
    return {k: v for k, v in annotations.items() if keys.is_carrier_annotation(k) or keys.is_owned_annotation(k)}


def _native_fields(pod: Mapping[str, Any]) -> dict[str, object]:
    spec = _map(pod.get("spec"))
    fields: dict[str, object] = {}
    if spec.get("qosResources") is not None:
        fields["spec.qosResources"] = spec["qosResources"]
    for kind in CONTAINER_KINDS:
        for container in spec.get(kind) or ():
            if not isinstance(container, dict):
                continue
            value = _map(container.get("resources")).get("qosResources")
            if value is not None:
                fields[f"spec.{kind}[{container.get('name')}].resources.qosResources"] = value
    return fields


def _asks_for_classes(pod: Mapping[str, Any]) -> bool:
    annotations = _map(_map(pod.get("metadata")).get("annotations"))
    return any(keys.is_carrier_annotation(k) for k in annotations) or bool(_native_fields(pod))


def _diff(kind: str, old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    return [f"{kind} {key}: {_show(old.get(key))} → {_show(new.get(key))}"
            for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]


def check_immutable(pod: Mapping[str, Any], old_pod: Mapping[str, Any] | None) -> Finding:
    if old_pod is None:
        return PASS
    changes = _diff("annotation", _class_annotations(old_pod), _class_annotations(pod))
    changes += _diff("field", _native_fields(old_pod), _native_fields(pod))
    if _asks_for_classes(old_pod) or _asks_for_classes(pod):
        old_labels = _map(_map(old_pod.get("metadata")).get("labels"))
        new_labels = _map(_map(pod.get("metadata")).get("labels"))
        changes += _diff("label", {k: old_labels.get(k) for k in _OWNED_LABELS if k in old_labels},
                         {k: new_labels.get(k) for k in _OWNED_LABELS if k in new_labels})
    if not changes:
        return PASS
    return deny("QoS classes of a pod are immutable (delete and recreate the pod to change them); changed: "
                + "; ".join(changes))
