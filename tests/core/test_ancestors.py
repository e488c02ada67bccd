"""The agent's pass, decided purely (qosgate.core.ancestors): unit cases and the acceptance properties of
issue 11 over random trees — both drivers, random other writers, pods coming and going:
every ancestor covers its children, no value another writer set is lowered, the agent's own writes never
lift anything above the protectable budget, nothing stale is left behind, and the kernel model then
protects every container fully."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.core.ancestors import Owned, PodDemand, plan_pass
from qosgate.core.cgtree import (
    BESTEFFORT,
    BURSTABLE,
    CGROUPFS,
    GUARANTEED,
    PAGE_SIZE,
    SYSTEMD,
    Kind,
    parse_tree,
    pod_dir,
    qos_dir,
)
from qosgate.core.kernelprot import ProtNode, effective_min, structural_usage

MiB = 2**20


class Sim:
    """A kubepods tree as {path: memory.min} plus who wrote each managed value last."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.mins: dict[str, int | str] = {"": 0, qos_dir(driver, BURSTABLE): 0, qos_dir(driver, BESTEFFORT): 0}
        self.foreign: dict[str, int] = dict.fromkeys(self.mins, 0)  # last value another writer set
        self.owned: dict[str, Owned] = {}
        self.pods: dict[str, tuple[str, list[str]]] = {}

    def add_pod(self, qos: str, containers: list[int], pod_min: int = 0) -> str:
        uid = str(uuid.UUID(int=len(self.pods) + 1 + 10**6 * len(self.mins)))
        path = pod_dir(self.driver, qos, uid)
        self.mins[path] = pod_min
        self.foreign[path] = pod_min
        names = []
        for i, value in enumerate(containers):
            name = f"{path}/" + (f"cri-containerd-{uid[:8]}{i}.scope" if self.driver == SYSTEMD else f"{uid[:8]}{i}")
            self.mins[name] = value
            names.append(name)
        self.pods[uid] = (path, names)
        return uid

    def remove_pod(self, uid: str) -> None:
        path, names = self.pods.pop(uid)
        for p in [path, *names]:
            self.mins.pop(p, None)
            self.foreign.pop(p, None)

    def foreign_write(self, path: str, value: int) -> None:
        if self.mins.get(path) == value:
            return  # indistinguishable from the agent's own value: a documented limit, not simulated
        self.mins[path] = value
        self.foreign[path] = value

    def snapshot(self) -> dict[str, dict[str, str | None]]:
        return {p: {"memory.min": f"{v}\n", "memory.low": "0\n", "memory.current": "0\n"} for p, v in self.mins.items()}

    def run(self, budget: int | None, demands: dict[str, PodDemand] | None = None):
        tree = parse_tree(self.snapshot(), self.driver)
        plan = plan_pass(tree, self.owned, demands, budget)
        for w in plan.writes:
            self.mins[w.path] = w.value
        self.owned = plan.owned
        return tree, plan


def managed(sim: Sim) -> list[str]:
    tree = parse_tree(sim.snapshot(), sim.driver)
    return [p for p, n in tree.nodes.items() if n.kind.managed]


def children_sum(sim: Sim, path: str) -> int:
    tree = parse_tree(sim.snapshot(), sim.driver)
    return sum(int(sim.mins[c]) for c in tree.nodes[path].children)


pages = st.integers(0, 64).map(lambda n: n * 4 * MiB)
pod_strategy = st.tuples(st.sampled_from([GUARANTEED, BURSTABLE, BESTEFFORT]), st.lists(pages, min_size=0, max_size=4),
                         st.sampled_from([0, 0, 0, 32 * MiB]))
step = st.fixed_dictionaries({
    "add": st.lists(pod_strategy, max_size=4),
    "remove": st.lists(st.integers(0, 50), max_size=3),
    "foreign": st.lists(st.tuples(st.integers(0, 50), pages), max_size=3),
})


def check_invariants(sim: Sim, plan, budget: int | None) -> None:
    cap = None if budget is None else budget // PAGE_SIZE * PAGE_SIZE
    for path in managed(sim):
        value = int(sim.mins[path])
        below = children_sum(sim, path)
        # 1. every ancestor covers its children (up to the budget when someone over-committed)
        assert value >= (below if cap is None else min(below, cap)), (path, value, below)
        # 2. no value another writer set is lowered
        assert value >= sim.foreign[path], (path, value, sim.foreign[path])
        # 4. nothing stale: exactly max(the other writer's value, what the children need)
        expected = max(sim.foreign[path], below if cap is None else min(below, cap))
        assert value == expected, (path, value, expected)
    # 3. the agent's own writes never exceed the budget (other writers' floors aside)
    for w in plan.writes:
        if cap is not None:
            assert w.value <= max(cap, sim.foreign[w.path]), w
    if cap is not None:
        tree = parse_tree(sim.snapshot(), sim.driver)
        asked = sum(plan.demand.get(c, 0) for c in tree.nodes[""].children)
        assert plan.overcommit == max(0, asked - cap)


def kernel_protects_every_container(sim: Sim) -> None:
    nodes = {"/": ProtNode(None, 0, 0)}
    for path, value in sim.mins.items():
        parent = "/" if path == "" else path.rpartition("/")[0]
        nodes[path] = ProtNode(parent, int(value), 0)
    for recursive in (False, True):
        emin = effective_min(structural_usage(nodes), "/", recursive)
        for _uid, (_path, names) in sim.pods.items():
            for name in names:
                assert emin[name] == int(sim.mins[name]), (name, emin[name], sim.mins[name], recursive)


@settings(max_examples=150, deadline=None)
@given(driver=st.sampled_from([SYSTEMD, CGROUPFS]), initial=st.lists(pod_strategy, max_size=6),
       steps=st.lists(step, min_size=1, max_size=5),
       budget=st.one_of(st.none(), st.integers(0, 2048).map(lambda n: n * MiB + 123)))
def test_any_pass_over_a_random_tree_keeps_the_invariants(driver, initial, steps, budget) -> None:
    sim = Sim(driver)
    for qos, containers, pod_min in initial:
        sim.add_pod(qos, containers, pod_min)
    _, plan = sim.run(budget)
    check_invariants(sim, plan, budget)
    for change in steps:
        for qos, containers, pod_min in change["add"]:
            sim.add_pod(qos, containers, pod_min)
        uids = sorted(sim.pods)
        for index in change["remove"]:
            if uids and uids[index % len(uids)] in sim.pods:
                sim.remove_pod(uids[index % len(uids)])
        targets = managed(sim)
        for index, value in change["foreign"]:
            sim.foreign_write(targets[index % len(targets)], value)
        _, plan = sim.run(budget)
        check_invariants(sim, plan, budget)
        _, again = sim.run(budget)
        assert again.writes == [], "a second pass over an unchanged tree must write nothing"
        if budget is None or plan.overcommit == 0:
            kernel_protects_every_container(sim)


def test_raises_the_three_ancestors_to_exactly_the_sum() -> None:
    sim = Sim(SYSTEMD)
    uid = sim.add_pod(BURSTABLE, [100 * MiB, 50 * MiB])
    _, plan = sim.run(None)
    pod = sim.pods[uid][0]
    assert [w.path for w in plan.writes] == ["", "kubepods-burstable.slice", pod]  # parents first
    assert sim.mins[""] == sim.mins["kubepods-burstable.slice"] == sim.mins[pod] == 150 * MiB


def test_lowers_its_own_value_when_a_pod_leaves_but_never_below_the_kubelet() -> None:
    sim = Sim(SYSTEMD)
    a = sim.add_pod(GUARANTEED, [300 * MiB])
    sim.add_pod(BURSTABLE, [100 * MiB])
    sim.foreign_write("", 120 * MiB)  # e.g. the kubelet's own figure
    sim.run(None)
    assert sim.mins[""] == 400 * MiB
    sim.remove_pod(a)
    _, plan = sim.run(None)
    assert sim.mins[""] == 120 * MiB  # back to the kubelet's value, not to the children's 100
    assert [(w.path, w.value) for w in plan.writes] == [("", 120 * MiB)]
    assert "" not in sim.owned


def test_a_value_rewritten_by_another_writer_becomes_the_new_floor() -> None:
    sim = Sim(SYSTEMD)
    sim.add_pod(BURSTABLE, [100 * MiB])
    sim.run(None)
    sim.foreign_write("", 0)  # policy None: the kubelet resets kubepods at start
    _, plan = sim.run(None)
    assert [(w.path, w.value) for w in plan.writes] == [("", 100 * MiB)]  # re-asserted every pass
    assert sim.owned[""] == Owned(100 * MiB, 0)


def test_overcommit_is_covered_up_to_the_budget_and_reported() -> None:
    sim = Sim(SYSTEMD)
    sim.add_pod(BURSTABLE, [600 * MiB])
    sim.add_pod(GUARANTEED, [600 * MiB])
    _, plan = sim.run(1000 * MiB)
    assert sim.mins[""] == 1000 * MiB
    assert plan.overcommit == 200 * MiB
    assert sim.mins["kubepods-burstable.slice"] == 600 * MiB


def test_an_announced_pod_is_pre_provisioned_on_its_qos_slice_then_on_its_own_cgroup() -> None:
    sim = Sim(SYSTEMD)
    uid = str(uuid.uuid4())
    demands = {uid: PodDemand(uid, BURSTABLE, 100 * MiB + 1)}
    _, plan = sim.run(None, demands)
    assert sim.mins["kubepods-burstable.slice"] == sim.mins[""] == 100 * MiB + PAGE_SIZE  # page-aligned up
    assert plan.pending_pods == (pod_dir(SYSTEMD, BURSTABLE, uid),)
    path = pod_dir(SYSTEMD, BURSTABLE, uid)
    sim.mins[path] = 0  # the kubelet created the pod cgroup; no container yet
    sim.foreign[path] = 0
    sim.run(None, demands)
    assert sim.mins[path] == 100 * MiB + PAGE_SIZE
    sim.mins[path + "/cri-containerd-x.scope"] = 100 * MiB
    _, plan = sim.run(None, demands)
    assert plan.writes == []  # the pre-provisioned figure already covers the container


def test_unknown_values_never_cause_a_lowering_on_their_path() -> None:
    sim = Sim(SYSTEMD)
    a = sim.add_pod(BURSTABLE, [100 * MiB])
    b = sim.add_pod(BURSTABLE, [50 * MiB])
    sim.run(None)
    assert sim.mins[""] == 150 * MiB
    sim.remove_pod(b)
    sim.mins[sim.pods[a][1][0]] = "garbage"
    tree, plan = sim.run(None)
    assert plan.writes == []  # would have lowered to 100 MiB; the children's figure is not known
    assert "kubepods-burstable.slice" in plan.uncertain
    assert any("garbage" in p for p in tree.problems)


def test_unreadable_managed_value_is_never_written() -> None:
    sim = Sim(CGROUPFS)
    sim.add_pod(BURSTABLE, [100 * MiB])
    sim.mins["burstable"] = "max-ish"
    _, plan = sim.run(None)
    assert "burstable" not in [w.path for w in plan.writes]
    assert sim.mins[""] == 100 * MiB  # the root still covers what the subtree asks


def test_failed_writes_are_not_remembered() -> None:
    sim = Sim(SYSTEMD)
    sim.add_pod(BURSTABLE, [100 * MiB])
    tree = parse_tree(sim.snapshot(), SYSTEMD)
    plan = plan_pass(tree, {}, None)
    kept = plan.owned_after({"kubepods-burstable.slice"})
    assert "kubepods-burstable.slice" not in kept and "" in kept


def test_containers_are_never_written() -> None:
    sim = Sim(CGROUPFS)
    sim.add_pod(GUARANTEED, [100 * MiB])
    tree, plan = sim.run(None)
    assert all(tree.nodes[w.path].kind is not Kind.CONTAINER for w in plan.writes)
