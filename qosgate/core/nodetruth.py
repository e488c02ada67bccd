"""What the kernel really protects on a node, and who else writes protection there (pure).

From the kubepods tree after an agent pass, the pods the API binds to the node and the agent's own writes:

- `infer_kubelet_policy`: KEP-2570's reservation policy as the tree shows it (architecture §7.4). Values the agent
  wrote itself are not evidence. TieredReservation leaves memory.low on Burstable pod cgroups / the
  Burstable slice; the pre-1.36 gate (legacy) writes memory.min on Burstable pod cgroups and the Burstable
  slice; policy None writes neither. Guaranteed-only evidence (Guaranteed pod cgroups or the root with a
  foreign memory.min, no Burstable evidence) cannot tell legacy from tiered and is called `legacy`, the
  policy that counts more — the safe reading for the extender.
- `nri_check`: a running container whose cgroup memory.min differs from its pod's
  `memory.min.memory-qos.nri.io/<container>` annotation (the kernel stores pages: the annotation is compared
  rounded down to a page).
- `protection_figures`: the report's byte figures, with qosgate.core.kernelprot for the kernel's arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from qosgate.core.ancestors import Owned
from qosgate.core.cgtree import BURSTABLE, GUARANTEED, PAGE_SIZE, Kind, KubeTree, page_down
from qosgate.core.kernelprot import ProtNode, effective_min, structural_usage
from qosgate.core.podprotection import PodView

_TOP = "/"  # the cgroup root in the kernel model; kubepods-relative paths never equal it


def _foreign_min(tree: KubeTree, owned: Mapping[str, Owned], path: str) -> int:
    node = tree.nodes[path]
    if node.min is None:
        return 0
    mine = owned.get(path)
    if mine is not None and mine.wrote == node.min:
        return mine.floor
    return node.min


def infer_kubelet_policy(tree: KubeTree, owned: Mapping[str, Owned]) -> str:
    """none | legacy | tiered | unknown (no pod cgroup and no kubelet value at all)."""
    pods = [n for n in tree.nodes.values() if n.kind is Kind.POD]
    burstable = [n for n in tree.nodes.values() if n.identity.qos == BURSTABLE and n.kind in (Kind.POD, Kind.QOS)]
    if any((n.low or 0) > 0 for n in burstable):
        return "tiered"
    if any(_foreign_min(tree, owned, n.path) > 0 for n in burstable):
        return "legacy"
    guaranteed_pods = [n for n in pods if n.identity.qos == GUARANTEED]
    if _foreign_min(tree, owned, "") > 0 or any(_foreign_min(tree, owned, n.path) > 0 for n in guaranteed_pods):
        return "legacy"
    return "none" if pods else "unknown"


@dataclass(frozen=True, slots=True)
class NriCheck:
    checked: int
    mismatches: int
    details: tuple[str, ...] = ()

    @property
    def honoured(self) -> bool | None:
        return None if self.checked == 0 else self.mismatches == 0


def nri_check(tree: KubeTree, pods: Iterable[PodView]) -> NriCheck:
    containers = tree.containers()
    checked = mismatches = 0
    details = []
    for pod in pods:
        for name, wanted in pod.nri_min.items():
            cid = pod.container_ids.get(name)
            cgroup = containers.get(cid) if cid else None
            if cgroup is None or cgroup.min is None:
                continue  # not running (yet), or unreadable: nothing to compare
            checked += 1
            if cgroup.min != page_down(wanted):
                mismatches += 1
                details.append(f"{pod.key} container {name}: memory.min {cgroup.min}, annotation {wanted}")
    return NriCheck(checked, mismatches, tuple(details))


@dataclass(frozen=True, slots=True)
class Figures:
    kubepods_min: int
    demanded: int
    kernel_protected: int
    kernel_protected_now: int
    accounted: int
    drift: int
    pod_protection: Mapping[str, int] = field(default_factory=dict)  # pod uid → structural effective min


def kernel_model(tree: KubeTree, values: Mapping[str, int], *, usage: bool) -> dict[str, ProtNode]:
    """The kubepods subtree under a virtual cgroup root, memory.min from `values` (unknown = 0)."""
    nodes = {_TOP: ProtNode(None, 0, 0)}
    for path, node in tree.nodes.items():
        parent = _TOP if path == "" else node.parent
        nodes[path] = ProtNode(parent, values.get(path, 0), (node.current or 0) if usage else 0)
    if usage:
        total = sum(n.usage for p, n in nodes.items() if n.parent == _TOP)
        nodes[_TOP] = ProtNode(None, 0, total)
    return nodes


def protection_figures(tree: KubeTree, values: Mapping[str, int], need_root: int, recursive: bool,
                       pods: Iterable[PodView] = ()) -> Figures:
    """`values`: every cgroup's memory.min after the pass (unknown ones absent). `need_root`: the planner's
    uncapped need at the kubepods root (includes pods announced but not started)."""
    leaves = [p for p, n in tree.nodes.items() if not n.children and p != ""]
    structural = effective_min(structural_usage(kernel_model(tree, values, usage=False)), _TOP, recursive)
    now = effective_min(kernel_model(tree, values, usage=True), _TOP, recursive)
    kernel_protected = sum(structural.get(p, 0) for p in leaves)
    kernel_now = sum(now.get(p, 0) for p in leaves)
    tree_pods = tree.pods()
    pod_protection = {uid: structural.get(node.path, 0) for uid, node in tree_pods.items()}
    accounted = drift = 0
    for pod in pods:
        if not pod.active or pod.memory_min <= 0:
            continue
        accounted += pod.memory_min
        node = tree_pods.get(pod.uid)
        if node is None:
            continue  # not started yet: the planner pre-provisions it, the kernel has nothing to protect
        missing = pod.memory_min - pod_protection[pod.uid]
        # The kernel keeps whole pages: each container's figure may lose up to a page to rounding.
        if missing > PAGE_SIZE * (len(node.children) + 1):
            drift += missing
    return Figures(
        kubepods_min=values.get("", 0),
        demanded=max(values.get("", 0), need_root),
        kernel_protected=kernel_protected,
        kernel_protected_now=kernel_now,
        accounted=accounted,
        drift=drift,
        pod_protection=pod_protection,
    )
