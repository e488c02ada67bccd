"""The kernel's effective memory.min arithmetic (cgroup v2), as pure functions.

A port of `effective_protection()` and `page_counter_calculate_protection()` (torvalds/linux mm/page_counter.c;
older kernels: mm/memcontrol.c `mem_cgroup_calculate_protection`), in pages as the kernel counts:

- the reclaim root's own setting is ignored; a cgroup with no usage gets nothing;
- a child of the reclaim root (e.g. kubepods.slice under node-wide reclaim) gets its declared memory.min;
- any other cgroup gets min(usage, memory.min), scaled down by parent_emin / Σ siblings' min(usage, min) when
  the parent's effective protection is over-committed — so a parent at 0 gives its children 0
  ("Effective min boundary is limited by memory.min values of ancestor cgroups", cgroup-v2.rst);
- with `memory_recursiveprot` a parent's unclaimed protection also floats down to children in proportion
  to their unprotected usage.

`effective_min` walks a whole tree top-down from the reclaim root. `structural_usage` gives the usage the
report assumes ("every protected cgroup fills its protection"), so the published figure says what the tree
*guarantees*, independent of how much memory the pods happen to use at the moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PAGE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class ProtNode:
    parent: str | None  # None only for the reclaim root
    min: int  # declared memory.min, bytes
    usage: int  # memory.current, bytes


def effective_protection(usage: int, parent_usage: int, setting: int, parent_effective: int,
                         siblings_protected: int, recursive: bool) -> int:
    """mm/page_counter.c effective_protection(), same argument order, any consistent unit (the kernel: pages).

    `siblings_protected` is the parent's children_min_usage = Σ over its children (this one included) of
    min(usage, setting).
    """
    protected = min(usage, setting)
    if siblings_protected > parent_effective:
        # Over-commit: each child gets its share of the parent's protection by protected usage.
        return protected * parent_effective // siblings_protected
    effective = protected
    if not recursive:
        return effective
    if parent_effective > siblings_protected and parent_usage > siblings_protected and usage > protected:
        unclaimed = (parent_effective - siblings_protected) * (usage - protected) // (parent_usage - siblings_protected)
        effective += unclaimed
    return effective


def _children(nodes: Mapping[str, ProtNode]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {path: [] for path in nodes}
    for path, node in nodes.items():
        if node.parent is not None and node.parent in children:
            children[node.parent].append(path)
    return children


def effective_min(nodes: Mapping[str, ProtNode], root: str, recursive: bool) -> dict[str, int]:
    """Effective memory.min (bytes, page-granular) of every node below `root`, for reclaim targeting `root`
    (the cgroup root for node-wide reclaim). The root itself is reported with its children's sum."""
    children = _children(nodes)
    pages = {path: (node.min // PAGE_SIZE, node.usage // PAGE_SIZE) for path, node in nodes.items()}
    # parent.children_min_usage = Σ_children min(usage, min)  (propagate_protected_usage)
    children_min_usage = {path: sum(min(pages[c][1], pages[c][0]) for c in kids) for path, kids in children.items()}
    emin: dict[str, int] = {}
    stack = [(c, root) for c in children.get(root, ())]
    while stack:
        path, parent = stack.pop()
        setting, usage = pages[path]
        if usage == 0:
            value = 0
        elif parent == root:
            value = setting
        else:
            value = effective_protection(usage, pages[parent][1], setting, emin[parent],
                                         children_min_usage[parent], recursive)
        emin[path] = value
        stack.extend((c, path) for c in children[path])
    result = {path: value * PAGE_SIZE for path, value in emin.items()}
    result[root] = sum(result[c] for c in children.get(root, ()))
    return result


def structural_usage(nodes: Mapping[str, ProtNode]) -> dict[str, ProtNode]:
    """The same tree with usage replaced by "every leaf uses exactly its memory.min, every parent the sum of
    its children": the protection the tree guarantees when the protected memory is really in use."""
    children = _children(nodes)
    usage: dict[str, int] = {}
    order: list[str] = []
    roots = [path for path, node in nodes.items() if node.parent is None or node.parent not in nodes]
    stack = list(roots)
    while stack:
        path = stack.pop()
        order.append(path)
        stack.extend(children[path])
    for path in reversed(order):
        kids = children[path]
        usage[path] = sum(usage[c] for c in kids) if kids else nodes[path].min
    return {path: ProtNode(node.parent, node.min, usage[path]) for path, node in nodes.items()}
