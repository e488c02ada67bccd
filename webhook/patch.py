"""JSON Patch (RFC 6902) generation for metadata maps, with the apiserver's pitfalls handled.

A patch that does not apply fails the user's request with a 500 even under failurePolicy Ignore, so the
map is added whole only when absent and per key otherwise (architecture §7.2).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any


@functools.lru_cache(maxsize=4096)
def escape_pointer(token: str) -> str:
    """RFC 6901: `~` first, then `/`, or `a/b~c` would be mangled."""
    return token.replace("~", "~0").replace("/", "~1")


def sync_owned_map(current: Mapping[str, str] | None, desired: Mapping[str, str], owned: set[str],
                   map_path: str) -> list[dict[str, Any]]:
    """Ops that make the owned keys of `current` exactly `desired`, leaving every other key untouched.

    `owned` is the set of keys present in `current` that only we may write; keys of it missing from
    `desired` are removed.
    """
    ops: list[dict[str, Any]] = []
    if current is None:
        if desired:
            ops.append({"op": "add", "path": map_path, "value": dict(desired)})
        return ops
    for key in sorted(owned - desired.keys()):
        ops.append({"op": "remove", "path": f"{map_path}/{escape_pointer(key)}"})
    for key, value in desired.items():
        if key not in current:
            ops.append({"op": "add", "path": f"{map_path}/{escape_pointer(key)}", "value": value})
        elif current[key] != value:
            ops.append({"op": "replace", "path": f"{map_path}/{escape_pointer(key)}", "value": value})
    return ops
