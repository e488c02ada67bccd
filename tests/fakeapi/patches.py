"""PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch, JSON patch (RFC 6902).

Strategic merge is what the official Python client sends for every dict body, so treating it as
a plain merge would make e.g. a status patch of one pod condition wipe the others. We implement
the part of it built-in types actually use: lists merged by their ``patchMergeKey`` (looked up by
field name), primitive merge lists (finalizers) and the ``$patch``/``$retainKeys``/
``$deleteFromPrimitiveList`` directives. ``$setElementOrder`` is accepted and ignored.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from .errors import APIError, bad_request

# patchMergeKey per list field (keyed by JSON field name; built-in types are consistent enough).
_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "imagePullSecrets": ("name",),
    "resourceClaims": ("name",),
    "schedulingGates": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    # container ports merge on containerPort, Service ports on port
    "ports": ("containerPort", "port"),
    "conditions": ("type",),
    "addresses": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "podIPs": ("ip",),
    "hostIPs": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
}
_PRIMITIVE_MERGE = frozenset({"finalizers"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386. Returns a new value; unchanged subtrees are shared with ``target``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(items: list[Any], field: str) -> str | None:
    for candidate in _MERGE_KEYS.get(field, ()):
        if any(isinstance(i, dict) and candidate in i for i in items):
            return candidate
    return None


def _strategic_list(orig: list[Any], patch: list[Any], field: str) -> list[Any]:
    key = _merge_key(patch, field) or _merge_key(orig, field)
    if key is None:
        if field in _PRIMITIVE_MERGE:
            return list(orig) + [v for v in patch if v not in orig]
        return copy.deepcopy(patch)
    out = list(orig)
    for elem in patch:
        if not isinstance(elem, dict) or key not in elem:
            raise bad_request(f"map: {elem} does not contain declared merge key: {key}")
        directive = elem.get("$patch")
        idx = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == elem[key]), None)
        if directive == "delete":
            if idx is not None:
                del out[idx]
            continue
        if directive == "replace":
            clean = {k: v for k, v in elem.items() if k != "$patch"}
            if idx is None:
                out.append(clean)
            else:
                out[idx] = clean
            continue
        if idx is None:
            out.append(strategic_merge(None, elem))
        else:
            out[idx] = strategic_merge(out[idx], elem)
    return out


def strategic_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    retain: list[str] | None = None
    for key, value in patch.items():
        if key == "$patch":
            continue
        if key == "$retainKeys":
            retain = list(value or [])
            continue
        if key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in (value or [])]
            continue
        if key.startswith("$"):
            raise bad_request(f"unknown patch directive {key!r}")
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _strategic_list(result[key], value, key)
        elif isinstance(value, list):
            result[key] = _strategic_list([], value, key)
        else:
            result[key] = value
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902 via the ``jsonpatch`` library: malformed patch -> 400, non-applying patch -> 422."""
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        patch = jsonpatch.JsonPatch(ops)
    except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException, TypeError) as exc:
        raise bad_request(str(exc)) from exc
    try:
        result = patch.apply(target)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, KeyError, IndexError, TypeError) as exc:
        raise APIError(422, str(exc), "Invalid") from exc
    if not isinstance(result, dict):
        raise APIError(422, "patched object is not a JSON object", "Invalid")
    return result


def apply_patch(content_type: str, target: dict[str, Any], body: Any) -> dict[str, Any]:
    if content_type == "application/json-patch+json":
        return json_patch(target, body)
    if not isinstance(body, dict):
        raise bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
    if content_type == "application/merge-patch+json":
        return merge_patch(target, body)
    return strategic_merge(target, body)
