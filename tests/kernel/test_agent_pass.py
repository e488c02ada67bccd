"""The node agent's own pass, against a real kernel: container memory.min set as the NRI plugin sets it (on the
container cgroup only), then ONE `qosgate agent` pass (qosgate.agent.engine.Agent over the VM's cgroupfs
through VMCgroupFS), then node-wide memory pressure. Without the pass the kernel reclaims the container's
page cache; after it the cache stays resident. Figures (bytes resident before/after) land in the summary."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qosgate.agent.engine import Agent, PassSettings
from qosgate.agent.hostfacts import HostFiles
from qosgate.agent.state import StateFile
from qosgate.core.nodereport import encode

from .cgroupfs_vm import VMCgroupFS
from .scenario import CGROUPFS, FIGURES, SYSTEMD, PressureResult, pressure_case
from .vm import CGROUP_ROOT, VM

pytestmark = pytest.mark.kernel_vm
MiB = 2**20


def guest_proc(vm: VM, directory: Path) -> str:
    """The guest's /proc files the agent reads (mount table, memory size), copied for HostFiles."""
    (directory / "self").mkdir(parents=True, exist_ok=True)
    (directory / "self" / "mountinfo").write_text(vm.read("/proc/self/mountinfo"))
    (directory / "meminfo").write_text(vm.read("/proc/meminfo"))
    return str(directory)


def agent_pass(tmp_path: Path, record: dict[str, object]):
    def run(vm: VM) -> dict[str, str]:
        host = HostFiles(CGROUP_ROOT, guest_proc(vm, tmp_path / "proc"), None)
        agent = Agent(VMCgroupFS(vm), host, PassSettings("kernel-vm", reserve=64 * MiB,
                                                          protectable_override=300 * MiB), StateFile(None, None))
        started = time.monotonic()
        result = agent.run_pass()
        record["result"] = result
        return {"agent writes": ", ".join(f"{w.path or '<root>'}={w.value // MiB}M" for w in result.writes),
                "agent pass seconds": f"{time.monotonic() - started:.1f}"}

    return run


def report(result: PressureResult, record_property) -> None:
    line = result.line()
    if result.extra:
        line += "; " + "; ".join(f"{k}: {v}" for k, v in result.extra.items())
    FIGURES.append(line)
    record_property("kept", round(result.kept, 3))
    record_property("resident_before_bytes", result.before["file"])
    record_property("resident_after_bytes", result.after["file"])
    assert result.before["file"] >= 0.9 * 150 * MiB, f"page cache not populated: {line}"


@pytest.mark.parametrize(("driver", "recursiveprot"), [(SYSTEMD, False), (CGROUPFS, False), (SYSTEMD, True)],
                         ids=["systemd", "cgroupfs", "systemd-recursiveprot"])
def test_one_agent_pass_keeps_the_container_resident(kernel_vm: VM, record_property, tmp_path: Path,
                                                      driver: str, recursiveprot: bool) -> None:
    record: dict[str, object] = {}
    result = pressure_case(kernel_vm, f"(agent) container min + one agent pass [{driver}"
                                      f"{', rprot' if recursiveprot else ''}]",
                           driver=driver, recursiveprot=recursiveprot, before_pressure=agent_pass(tmp_path, record))
    report(result, record_property)
    passed = record["result"]
    assert [w.value for w in passed.writes] == [200 * MiB] * 3, passed.writes  # kubepods, QoS slice, pod
    assert not passed.failed
    r = passed.report
    assert (r.cgroup_v2, r.memory_controller, r.recursive_prot) == (True, True, recursiveprot), encode(r)
    assert r.kernel_protected_bytes == 200 * MiB and r.kubepods_min_bytes == 200 * MiB, encode(r)
    assert result.kept > 0.9, result.line()


def test_without_the_agent_pass_the_container_is_reclaimed(kernel_vm: VM, record_property) -> None:
    result = pressure_case(kernel_vm, "(no agent) container min only [systemd]", driver=SYSTEMD)
    report(result, record_property)
    assert result.kept < 0.5, result.line()
