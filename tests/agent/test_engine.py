"""The agent's pass over a fake cgroupfs tree: drivers, runtimes, restarts, and bad input (unreadable files,
garbage, cgroups vanishing mid-pass, writes failing) — logged and reported, never a crash, never a wrong value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from qosgate.agent.cgroupfs import HostCgroupFS
from qosgate.agent.engine import Agent, PassSettings
from qosgate.agent.state import StateFile
from qosgate.core.catalog import CatalogHolder, load_catalog_yaml
from qosgate.core.cgtree import CGROUPFS, SYSTEMD
from qosgate.core.podprotection import PodView
from tests.agent.faketree import FakeNode, MiB


def agent(node: FakeNode, tmp: Path, fs=None, cluster=None, **settings) -> Agent:
    return Agent(fs or HostCgroupFS(str(node.root)), node.host_files(), PassSettings("n1", **settings),
                 StateFile(str(tmp / "state.json"), "boot-1"), cluster)


@pytest.mark.parametrize("driver", [SYSTEMD, CGROUPFS])
@pytest.mark.parametrize("runtime", ["containerd", "crio"])
def test_every_ancestor_is_raised_to_the_sum(tmp_path: Path, driver: str, runtime: str) -> None:
    node = FakeNode(tmp_path, driver)
    pod, _ = node.pod("burstable", (100 * MiB, 60 * MiB), runtime=runtime)
    guaranteed, _ = node.pod("guaranteed", (200 * MiB,), runtime=runtime)
    node.pod("besteffort", (0,), runtime=runtime)
    result = agent(node, tmp_path).run_pass()
    assert not result.failed and not result.report.problems
    assert node.min(pod) == node.min(node.qos_path("burstable")) == 160 * MiB
    assert node.min(guaranteed) == 200 * MiB and node.min(node.kdir) == 360 * MiB
    assert node.min(node.qos_path("besteffort")) == 0
    assert result.report.kernel_protected_bytes == 360 * MiB and result.report.kubelet_policy == "none"


def test_own_raises_are_lowered_after_a_restart_but_kubelet_values_never(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    a, _ = node.pod("guaranteed", (300 * MiB,))
    node.pod("burstable", (100 * MiB,))
    node.set(node.kdir, 50 * MiB)  # another writer's value
    agent(node, tmp_path).run_pass()
    assert node.min(node.kdir) == 400 * MiB
    node.remove(a)
    restarted = agent(node, tmp_path)  # a new process: what it raised comes from the state file
    restarted.run_pass()
    assert node.min(node.kdir) == 100 * MiB and node.min(node.qos_path("burstable")) == 100 * MiB


def test_without_state_file_earlier_raises_are_kept_not_lowered(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    a, _ = node.pod("guaranteed", (300 * MiB,))
    agent(node, tmp_path).run_pass()
    (tmp_path / "state.json").write_text("{not json")
    node.remove(a)
    again = agent(node, tmp_path)
    result = again.run_pass()
    assert node.min(node.kdir) == 300 * MiB  # cannot know it was ours: treated as another writer's
    assert any("state file" in p for p in result.report.problems)


def test_state_from_another_boot_is_discarded(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    node.pod("burstable", (100 * MiB,))
    agent(node, tmp_path).run_pass()
    loaded = StateFile(str(tmp_path / "state.json"), "boot-2").load()
    assert loaded == {}


def test_garbage_and_unreadable_files_are_reported_and_never_lowered_past(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    a, ids = node.pod("burstable", (100 * MiB,))
    b, _ = node.pod("burstable", (50 * MiB,))
    first = agent(node, tmp_path)
    first.run_pass()
    node.remove(b)
    node.set(f"{a}/{node.container_name(ids[0])}", "banana")
    (node.root / node.qos_path("besteffort") / "memory.min").unlink()
    (node.root / node.qos_path("besteffort") / "memory.min").mkdir()  # unreadable (EISDIR), even for root
    result = first.run_pass()
    assert node.min(node.kdir) == 150 * MiB  # no lowering while a child's value is unknown
    assert any("banana" in p for p in result.report.problems)
    assert any("besteffort" in p and "unreadable" in p for p in result.report.problems)
    assert not result.writes


class VanishingFS(HostCgroupFS):
    """Removes a pod between the snapshot and the writes, as a pod deletion would."""

    def __init__(self, root: str, victim: Path) -> None:
        super().__init__(root)
        self.victim = victim

    def write(self, values: Sequence[tuple[str, str]]) -> dict[str, str]:
        import shutil

        shutil.rmtree(self.victim, ignore_errors=True)
        return super().write(values)


def test_a_cgroup_vanishing_mid_pass_fails_its_write_only(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    pod, _ = node.pod("burstable", (100 * MiB,))
    fs = VanishingFS(str(node.root), node.root / pod)
    the_agent = agent(node, tmp_path, fs=fs)
    result = the_agent.run_pass()
    assert set(result.failed) == {pod.split("/", 1)[1]}
    assert "No such file" in next(iter(result.failed.values()))
    assert node.min(node.kdir) == 100 * MiB  # the others went through; the next pass lowers them
    assert pod.split("/", 1)[1] not in {p.split("/", 1)[-1] for p in the_agent.owned}
    the_agent.fs = HostCgroupFS(str(node.root))
    the_agent.run_pass()
    assert node.min(node.kdir) == 0


def test_a_node_without_cgroup_v2_writes_nothing(tmp_path: Path) -> None:
    node = FakeNode(tmp_path, cgroup2=False)
    pod, _ = node.pod("burstable", (100 * MiB,))
    result = agent(node, tmp_path).run_pass()
    assert node.min(pod) == 0 and result.report.protectable_bytes == 0 and not result.report.cgroup_v2
    assert any("not a cgroup v2 mount" in p for p in result.report.problems)


def test_no_kubepods_is_a_report_not_a_crash(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    import shutil

    shutil.rmtree(node.root / node.kdir)
    result = agent(node, tmp_path).run_pass()
    assert any("no kubepods cgroup" in p for p in result.report.problems)


def test_a_bug_in_a_pass_is_reported_and_the_next_pass_runs(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    the_agent = agent(node, tmp_path)

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    the_agent.fs.snapshot = broken  # type: ignore[method-assign]
    result = the_agent.run_pass()
    assert result.report.problems == ("pass failed: RuntimeError: boom",)


def test_overcommit_is_capped_at_the_budget_and_reported(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    node.pod("guaranteed", (600 * MiB,))
    node.pod("burstable", (600 * MiB,))
    result = agent(node, tmp_path, protectable_override=1000 * MiB).run_pass()
    assert node.min(node.kdir) == 1000 * MiB
    assert result.report.overcommit_bytes == 200 * MiB and result.overcommit_detail
    assert "over-committed" in " ".join(result.report.problems)


class Cluster:
    def __init__(self, pods: list[PodView] | None, budget: int | None = None, offer: str | None = None,
                 nri: str | None = None) -> None:
        self._pods, self._budget, self._offer, self._nri = pods, budget, offer, nri

    def pods(self):
        return self._pods

    def configured_budget(self, protectable_percent: int):
        return self._budget

    def admin_offer(self):
        return self._offer

    def nri_config_text(self):
        return self._nri


def test_bound_pods_are_pre_provisioned_and_accounted(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    uid = "0b5d1f2e-7c3a-4e8b-9d6f-1a2b3c4d5e6f"
    view = PodView(uid, "ns", "p", "burstable", True, 128 * MiB)
    result = agent(node, tmp_path, cluster=Cluster([view], budget=4 << 30,
                                                   nri="unifiedannotations: [memory.min]")).run_pass()
    assert node.min(node.qos_path("burstable")) == 128 * MiB  # before the pod cgroup even exists
    assert result.report.accounted_bytes == 128 * MiB and result.report.protectable_bytes == 4 << 30
    assert result.report.offered_classes == "memory-qos=gold" and result.report.offered_classes_source == "nri-config"
    pod = node.mkcg(node.pod_path("burstable", uid))
    agent(node, tmp_path, cluster=Cluster([view])).run_pass()
    assert node.min(pod) == 128 * MiB


def test_api_unknown_pods_are_a_problem_not_a_crash(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    node.pod("burstable", (100 * MiB,))
    result = agent(node, tmp_path, cluster=Cluster(None)).run_pass()
    assert node.min(node.kdir) == 100 * MiB  # the cgroup side works without the API
    assert any("not known yet" in p for p in result.report.problems)


class PercentCluster(Cluster):
    """A node with 10 GiB allocatable and no budget annotation: the catalog's percent decides its budget."""

    def configured_budget(self, protectable_percent: int):
        return 10 * 2**30 * protectable_percent // 100


def test_a_catalog_edit_applies_from_the_next_pass_without_a_restart(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    holder = CatalogHolder()
    running = agent(node, tmp_path, cluster=PercentCluster([], nri="unifiedannotations: [memory.min]"),
                    catalog=holder)
    before = running.run_pass().report
    assert before.protectable_bytes == 9 * 2**30 and before.offered_classes == "memory-qos=gold"
    holder.replace(load_catalog_yaml("""\
protectablePercent: 50
backends: [nri-memory-qos]
resources:
- name: memory-qos
  classes: [{name: gold, memoryMinPercent: 100}, {name: platinum, memoryMinPercent: 100}]
""", "edited"), "edited")
    after = running.run_pass().report
    assert after.protectable_bytes == 5 * 2**30
    assert after.offered_classes == "memory-qos=gold,platinum"


def test_a_lowered_budget_caps_kubepods_from_the_next_pass_and_reports_the_overcommit(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    node.pod("burstable", (6 * 2**30,))
    holder = CatalogHolder()
    running = agent(node, tmp_path, cluster=PercentCluster([]), catalog=holder)
    assert running.run_pass().report.overcommit_bytes == 0
    assert node.min(node.kdir) == 6 * 2**30  # within 90 % of 10 GiB
    holder.replace(replace(holder.current, protectable_percent=50), "edited")
    report = running.run_pass().report
    assert node.min(node.kdir) == 5 * 2**30  # the agent's own raise, capped at the new budget
    assert report.overcommit_bytes == 2**30
