"""Decode-time schema handling: drop unknown fields and reject wrongly typed values.

kube-apiserver decodes every request body into Go structs. Two consequences matter to qosgate
(architecture §2.1): unknown fields such as ``spec.qosResources`` are silently *dropped* (with a
``Warning`` header under the default ``fieldValidation=Warn``, a 400 under ``Strict``), and a
value of the wrong JSON type (an int annotation value) fails decoding. We reproduce both using the
field tables the official Python client already ships (``openapi_types`` / ``attribute_map`` of
its generated models), so no schema is hand-written here and it tracks the client's API version.
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import cache
from typing import Any

import kubernetes.client.models as _models
import orjson

# Resource-quantity maps are typed ``Dict[str, str]`` in the Python models, but a Go
# resource.Quantity also unmarshals from a JSON number.
_QUANTITY_MAPS = frozenset({"limits", "requests", "capacity", "allocatable", "hard", "used", "overhead"})
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_GO_TYPES = {
    "str": "string",
    "int": "int64",
    "bool": "bool",
    "float": "float64",
    "datetime": "v1.Time",
    "bytes": "[]uint8",
}


@cache
def _fields(model: str) -> dict[str, str] | None:
    """JSON field name -> type string for a generated model class, None if the client lacks it."""
    cls = getattr(_models, model, None)
    if cls is None or not hasattr(cls, "openapi_types"):
        return None
    return {cls.attribute_map[py]: typ for py, typ in cls.openapi_types.items()}


def model_for(version: str, kind: str) -> str | None:
    name = version[:1].upper() + version[1:] + kind
    return name if _fields(name) is not None else None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


class _Walk:
    def __init__(self) -> None:
        self.unknown: list[str] = []
        self.errors: list[str] = []

    def type_error(self, value: Any, where: str, typ: str) -> None:
        go = _GO_TYPES.get(typ, typ)
        self.errors.append(f"json: cannot unmarshal {_json_type(value)} into Go struct field {where} of type {go}")

    def value(self, value: Any, typ: str, path: str, where: str, field: str) -> Any:
        if value is None:
            return None
        if typ == "object":
            return value
        if typ.startswith("List["):
            if not isinstance(value, list):
                self.type_error(value, where, "[]" + typ[5:-1])
                return value
            inner = typ[5:-1]
            return [self.value(v, inner, f"{path}[{i}]", where, field) for i, v in enumerate(value)]
        if typ.startswith("Dict[str, "):
            if not isinstance(value, dict):
                self.type_error(value, where, "map[string]" + typ[10:-1])
                return value
            inner = typ[10:-1]
            if inner == "str" and field in _QUANTITY_MAPS:
                return {k: self.quantity(v, where) for k, v in value.items()}
            return {k: self.value(v, inner, f"{path}[{k}]", where, field) for k, v in value.items()}
        if typ == "str":
            if not isinstance(value, str):
                self.type_error(value, where, typ)
            return value
        if typ == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                self.type_error(value, where, typ)
            return value
        if typ == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.type_error(value, where, typ)
            return value
        if typ == "bool":
            if not isinstance(value, bool):
                self.type_error(value, where, typ)
            return value
        if typ in ("datetime", "date"):
            if not isinstance(value, str):
                self.type_error(value, where, typ)
            elif typ == "datetime" and not _RFC3339.match(value):
                self.errors.append(f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse')
            return value
        if typ == "bytes":
            if not isinstance(value, str):
                self.type_error(value, where, typ)
            else:
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    self.errors.append(f"illegal base64 data in {where}")
            return value
        fields = _fields(typ)
        if fields is None:  # a type the client does not model: keep verbatim
            return value
        if not isinstance(value, dict):
            self.type_error(value, where, typ)
            return value
        return self.obj(value, typ, fields, path)

    def quantity(self, value: Any, where: str) -> Any:
        if isinstance(value, bool):
            self.type_error(value, where, "resource.Quantity")
            return value
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return str(int(value)) if value.is_integer() else repr(value)
        if not isinstance(value, str):
            self.type_error(value, where, "resource.Quantity")
        return value

    def obj(self, value: dict[str, Any], model: str, fields: dict[str, str], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        struct = model[2:] if model.startswith("V1") else model
        for k, v in value.items():
            child = f"{path}.{k}" if path else k
            typ = fields.get(k)
            if typ is None:
                self.unknown.append(child)
                continue
            if v is None:  # Go leaves nil pointers out of the re-encoded object
                continue
            out[k] = self.value(v, typ, child, f"{struct}.{child}", k)
        return out


def decode(obj: dict[str, Any], version: str, kind: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """Return (pruned copy, unknown field paths, decode errors). Unmodelled kinds pass through."""
    model = model_for(version, kind)
    if model is None:
        # Unmodelled kind: still hand back a private copy, callers mutate the result.
        return orjson.loads(orjson.dumps(obj)), [], []
    fields = _fields(model)
    assert fields is not None
    walk = _Walk()
    pruned = walk.obj(obj, model, fields, "")
    return pruned, walk.unknown, walk.errors
