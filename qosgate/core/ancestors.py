"""One agent pass over the kubepods tree, decided purely: which memory.min values to write so that every
ancestor covers its children (the node agent's reconcile; architecture §4.3, agent/README.md).

Rules, from the kernel ("Effective min boundary is limited by memory.min values of ancestor cgroups",
cgroup-v2.rst; architecture §7.3) and what the agent promises (§4.3):

- Only the managed levels are written: the kubepods root, the QoS slices and the pod cgroups. A container's
  own memory.min (the NRI plugin's, the kubelet's) is read, never written.
- A managed cgroup's *need* is the sum of its children's memory.min after this pass, plus, before a pod's
  cgroup exists, the pod's announced demand (its `qosgate.io/memory-min`, pre-provisioned on its QoS slice);
  a pod cgroup keeps at least its own announced demand (so protection exists before the containers start).
- What is short is raised to exactly the need (no margin: under memory_recursiveprot a parent's surplus
  flows to unprotected children). What another writer set (kubelet, koordlet) is never lowered: that value
  is the *floor*. The agent lowers only values it raised itself — back to max(floor, need) — so protection
  of pods that left never lingers for their unprotected siblings.
- The agent's own raise is capped at the node's protectable budget (page-aligned); a need above it is
  over-commit someone else made, reported, not followed.
- When a value in a subtree is unknown (unreadable file, garbage), the parent's need is only a lower
  bound: the agent may raise towards it but never lowers anything on that path.
- Values are page multiples: the kernel stores memory.min in pages (rounding a write down), so the agent
  writes needs rounded *up* and can recognise its own writes when it reads them back.

"What the agent raised" (`Owned`) is remembered by the caller across passes and restarts; an entry is only
trusted while the cgroup still holds exactly the value the agent wrote — any other value means another
writer has written since, and that value becomes the new floor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from qosgate.core.cgtree import (
    UNLIMITED,
    Kind,
    KubeTree,
    format_bytes_file,
    page_down,
    page_up,
    pod_dir,
    qos_dir,
)


@dataclass(frozen=True, slots=True)
class Owned:
    """A value the agent wrote, and the value another writer had set before (never go below it)."""

    wrote: int
    floor: int


@dataclass(frozen=True, slots=True)
class PodDemand:
    """A pod bound to this node, as the API announces it: its QoS class and qosgate's memory.min figure."""

    uid: str
    qos: str
    memory_min: int


@dataclass(frozen=True, slots=True)
class Write:
    path: str  # relative to the kubepods root
    value: int
    old: int
    reason: str

    @property
    def text(self) -> str:
        return format_bytes_file(self.value)

    @property
    def raise_(self) -> bool:
        return self.value > self.old


@dataclass(slots=True)
class Plan:
    writes: list[Write]  # raises top-down first, then lowers bottom-up: the safe order to apply them
    owned: dict[str, Owned]  # the state after every write succeeded
    previous_owned: dict[str, Owned]  # the state entries the pass started from, still valid
    final: dict[str, int]  # every known memory.min after the writes (managed and observed)
    need: dict[str, int]  # each managed cgroup's need: Σ children's values after the pass (+ announced pods)
    demand: dict[str, int]  # the same with no budget cap anywhere below: what the subtree asks for
    uncertain: set[str] = field(default_factory=set)
    overcommit: int = 0  # demand at the kubepods root beyond the budget
    pending_pods: tuple[str, ...] = ()  # announced pods whose cgroup does not exist yet

    def owned_after(self, failed: set[str]) -> dict[str, Owned]:
        """The state to keep when the writes to `failed` paths did not happen."""
        owned = {p: o for p, o in self.owned.items() if p not in failed}
        for path in failed:
            if path in self.previous_owned:
                owned[path] = self.previous_owned[path]
        return owned


def plan_pass(tree: KubeTree, owned: Mapping[str, Owned], demands: Mapping[str, PodDemand] | None = None,
              budget: int | None = None) -> Plan:
    """Decide one pass. `budget` None = no cap (tests); 0 = the node cannot protect anything (release)."""
    demands = demands or {}
    pods = tree.pods()
    # Pods announced by the API whose cgroup does not exist yet: their demand lands on their QoS cgroup.
    pending: dict[str, int] = {}
    pending_pods = []
    for uid, bound in demands.items():
        if uid in pods or bound.memory_min <= 0:
            continue
        target = qos_dir(tree.driver, bound.qos)
        if target in tree.nodes:
            pending[target] = pending.get(target, 0) + page_up(bound.memory_min)
            pending_pods.append(pod_dir(tree.driver, bound.qos, uid))
    cap = None if budget is None else page_down(max(0, budget))

    final: dict[str, int] = {}
    need: dict[str, int] = {}
    demand: dict[str, int] = {}
    uncertain: set[str] = set()
    new_owned: dict[str, Owned] = {}
    previous: dict[str, Owned] = {}
    writes: list[Write] = []
    root_asked = 0
    for path in reversed(tree.order):  # children before parents
        node = tree.nodes[path]
        unsure = node.min is None or any(c in uncertain for c in node.children)
        if not node.kind.managed:
            if node.min is None:
                uncertain.add(path)
            else:
                final[path] = demand[path] = node.min
            continue
        total = sum(final.get(c, 0) for c in node.children) + pending.get(path, 0)
        asked = sum(demand.get(c, 0) for c in node.children) + pending.get(path, 0)
        pod_uid = node.identity.pod_uid
        if node.kind is Kind.POD and pod_uid is not None and pod_uid in demands:
            announced = page_up(demands[pod_uid].memory_min)
            total, asked = max(total, announced), max(asked, announced)
        total = min(total, UNLIMITED)
        need[path] = total
        demand[path] = asked = min(asked, UNLIMITED)
        if path == "":
            root_asked = asked  # the children's ask: the root's own (kubelet) value is not over-commit
        current = node.min
        if current is None:
            # Unknown: never written. The parent must still cover what this subtree asks.
            uncertain.add(path)
            final[path] = total
            continue
        mine = owned.get(path)
        if mine is not None and mine.wrote != current:
            mine = None  # another writer has written since: its value is the new floor
        if mine is not None:
            previous[path] = mine
        floor = mine.floor if mine is not None else current
        demand[path] = max(asked, floor)  # another writer's value is asked for too (the kubelet's G+B …)
        raised = page_up(total)
        if cap is not None:
            raised = min(raised, cap)
        desired = max(floor, raised)
        if unsure:
            uncertain.add(path)
            desired = max(desired, current)  # a lower bound only: raise, never lower
        if desired != current:
            reason = "raise to cover children" if desired > current else "lower own value to what children need"
            writes.append(Write(path, desired, current, reason))
        if desired != floor:
            new_owned[path] = Owned(desired, floor)
        final[path] = desired

    overcommit = max(0, root_asked - cap) if cap is not None else 0
    depth = {w.path: (w.path.count("/") + 1 if w.path else 0) for w in writes}
    raises = sorted((w for w in writes if w.raise_), key=lambda w: depth[w.path])
    lowers = sorted((w for w in writes if not w.raise_), key=lambda w: -depth[w.path])
    return Plan(raises + lowers, new_owned, previous, final, need, demand, uncertain, overcommit,
                tuple(pending_pods))
