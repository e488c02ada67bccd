"""What a node can enforce, read from text the agent collects (pure: strings in, facts out).

- cgroup v2 and its options, from /proc/self/mountinfo (`memory_recursiveprot` is a cgroup2 mount option,
  kernel ≥ 5.7; systemd mounts with it when supported — architecture §7.3);
- the memory controller, from the root's cgroup.controllers;
- total memory, from /proc/meminfo;
- the NRI memory-qos plugin's configuration (containers/nri-plugins cmd/plugins/memory-qos: keys matched
  case-insensitively to the Go fields `UnifiedAnnotations []string`, `Classes []{Name, SwapLimitRatio}` —
  architecture §7.5) and, from it and the catalog, which qosgate classes the node can enforce (KEP-3008 node side,
  in the syntax of qosgate.core.nodeoffer);
- the protectable budget (architecture §5.1).

Every parser returns a neutral value plus a problem string instead of raising: the agent must keep running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from qosgate.core.catalog import Catalog
from qosgate.core.nodeoffer import format_node_offer


@dataclass(frozen=True, slots=True)
class CgroupMount:
    cgroup2: bool
    recursiveprot: bool | None  # None: no cgroup2 mount found for the root
    mount_point: str | None = None


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 …).
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and len(text[i + 1:i + 4]) == 3 and text[i + 1:i + 4].isdigit():
            out.append(chr(int(text[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str, cgroup_root: str) -> CgroupMount:
    """The cgroup2 mount whose mount point is `cgroup_root` (or the longest one containing it)."""
    best: tuple[int, CgroupMount] | None = None
    root = cgroup_root.rstrip("/") or "/"
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 3:
            continue
        mount_point = _unescape(fields[4])
        fstype = fields[sep + 1]
        options = set(fields[5].split(",")) | set(fields[sep + 3].split(",") if len(fields) > sep + 3 else ())
        if not (root == mount_point or root.startswith(mount_point.rstrip("/") + "/")):
            continue
        score = len(mount_point)
        if best is None or score >= best[0]:
            if fstype == "cgroup2":
                best = (score, CgroupMount(True, "memory_recursiveprot" in options, mount_point))
            else:
                best = (score, CgroupMount(False, None, mount_point))
    return best[1] if best else CgroupMount(False, None, None)


def memory_controller(controllers: str | None) -> bool:
    return controllers is not None and "memory" in controllers.split()


def parse_meminfo_total(text: str | None) -> int | None:
    """MemTotal in bytes, or None."""
    for line in (text or "").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                unit = parts[2].lower() if len(parts) > 2 else "kb"
                return int(parts[1]) * (1024 if unit == "kb" else 1)
    return None


@dataclass(frozen=True, slots=True)
class NriConfig:
    unified_annotations: frozenset[str]
    classes: frozenset[str]
    problems: tuple[str, ...] = ()


def _field(raw: Mapping[object, object], name: str) -> object:
    # sigs.k8s.io/yaml into a Go struct without json tags: keys match the field names case-insensitively.
    for key, value in raw.items():
        if isinstance(key, str) and key.lower() == name:
            return value
    return None


def parse_nri_config(text: str) -> NriConfig | None:
    """The plugin's config file; None when it is not a readable configuration at all."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None
    problems = []
    unified_raw = _field(raw, "unifiedannotations") or []
    unified = frozenset(u for u in unified_raw if isinstance(u, str)) if isinstance(unified_raw, list) else frozenset()
    if not isinstance(unified_raw, list):
        problems.append("unifiedannotations is not a list")
    classes_raw = _field(raw, "classes") or []
    classes: set[str] = set()
    if isinstance(classes_raw, list):
        for entry in classes_raw:
            name = _field(entry, "name") if isinstance(entry, dict) else None
            if isinstance(name, str) and name:
                classes.add(name)
    else:
        problems.append("classes is not a list")
    return NriConfig(unified, frozenset(classes), tuple(problems))


@dataclass(frozen=True, slots=True)
class Offer:
    value: str | None  # nodeoffer syntax; None = unknown (the extender then keeps the node's own annotation)
    source: str  # "nri-config", "admin", "none"
    refused: dict[str, str] = field(default_factory=dict)  # class → why the node cannot enforce it


def offered_classes(catalog: Catalog, nri: NriConfig | None, enforceable: bool, admin: str | None = None) -> Offer:
    """The catalog's memory classes this node can enforce.

    From the NRI plugin's configuration when the catalog uses that backend and the file was readable: a class
    needs `memory.min` in unifiedannotations if it sets memory.min, `memory.high` if it throttles, and its
    nriClass among the plugin's classes (an unknown class fails container creation). Otherwise the admin's
    value (flag or node annotation) is passed through, else unknown. A node without cgroup v2 + the memory
    controller enforces nothing that touches memory.
    """
    resource = catalog.memory_resource
    if "nri-memory-qos" not in catalog.backends or nri is None or resource is None:
        return Offer(admin, "admin" if admin is not None else "none")
    classes: dict[str, int] = {}
    refused: dict[str, str] = {}
    for name, qos_class in catalog.resources[resource].classes.items():
        touches_memory = qos_class.memory_min_percent > 0 or qos_class.throttle_percent > 0
        if touches_memory and not enforceable:
            refused[name] = "no cgroup v2 memory controller"
        elif qos_class.memory_min_percent > 0 and "memory.min" not in nri.unified_annotations:
            refused[name] = "NRI plugin config lacks memory.min in unifiedannotations"
        elif qos_class.throttle_percent > 0 and "memory.high" not in nri.unified_annotations:
            refused[name] = "NRI plugin config lacks memory.high in unifiedannotations"
        elif qos_class.nri_class is not None and qos_class.nri_class not in nri.classes:
            refused[name] = f"NRI plugin config has no class {qos_class.nri_class!r}"
        else:
            classes[name] = 0
    value = format_node_offer({resource: classes}) if classes else ""
    return Offer(value, "nri-config", refused)


def protectable_bytes(configured: int | None, total_memory: int | None, outside_min: int, reserve: int,
                      enforceable: bool) -> int:
    """min(configured budget, total memory − Σ memory.min outside kubepods − reserve); 0 when the node cannot
    enforce memory.min at all. With neither figure known the answer is 0: nothing is promised blindly."""
    if not enforceable:
        return 0
    candidates = []
    if configured is not None:
        candidates.append(max(0, configured))
    if total_memory is not None:
        candidates.append(max(0, total_memory - outside_min - reserve))
    return min(candidates) if candidates else 0
