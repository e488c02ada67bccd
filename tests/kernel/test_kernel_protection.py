"""cgroup v2 memory.min under node-wide pressure, measured on the distribution kernel inside a QEMU guest.

"Effective min boundary is limited by memory.min values of ancestor cgroups" (cgroup-v2.rst): a container's
memory.min protects nothing while its pod slice, QoS slice and kubepods.slice stay at 0, which is what qosgate
has to fix on the node. These tests prove that baseline on a real kernel; they assert on the share of page
cache kept, never on timing. The figures land in the "kernel VM figures" section of the pytest summary.
"""

from __future__ import annotations

import pytest

from .scenario import CGROUPFS, FIGURES, SYSTEMD, PressureResult, abspath, make_cgroups, pressure_case, reset
from .vm import CGROUP_ROOT, VM

pytestmark = pytest.mark.kernel_vm


def report(result: PressureResult, record_property) -> None:
    FIGURES.append(result.line())
    record_property("kept", round(result.kept, 3))
    record_property("figures", result.line())
    # A case that did not fill its cache or did not put the node under pressure proves nothing.
    assert result.before["file"] >= 0.9 * 150 * 2**20, f"page cache not populated: {result.line()}"


# -- the command channel itself (the cgroupfs-over-the-console adapter relies on it) --------------------------


def test_console_channel_round_trips(kernel_vm: VM) -> None:
    vm = kernel_vm
    reset(vm, recursiveprot=False)
    assert vm.run("exit 3") == (3, "")
    assert vm.run("printf 'a\\n\\nb'") == (0, "a\n\nb")
    assert vm.run("echo out; echo err >&2") == (0, "out\nerr\n")
    weird = "quotes ' \" $HOME `x` \\ \t and a long line " + "x" * 6000
    assert vm.run(f"cat <<'EOF'\n{weird}\nEOF") == (0, weird + "\n")
    assert vm.read(f"{CGROUP_ROOT}/cgroup.controllers").startswith("cpuset cpu io memory")

    pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podabc.slice"
    make_cgroups(vm, f"{pod}/cri-containerd-1.scope", f"{pod}/cri-containerd-2.scope")
    assert vm.list_dirs(abspath(pod)) == ["cri-containerd-1.scope", "cri-containerd-2.scope"]
    before = vm.round_trips
    errors = vm.write_many(
        {
            abspath("kubepods.slice") + "/memory.min": "104857600",
            abspath(pod) + "/memory.min": 52428800,
            abspath(pod) + "/cri-containerd-1.scope/memory.min": "max",
            abspath(pod) + "/memory.nonexistent": "1",
            abspath(pod) + "/memory.low": "not-a-number",
        },
        check=False,
    )
    assert set(errors) == {abspath(pod) + "/memory.nonexistent", abspath(pod) + "/memory.low"}, errors
    assert "Invalid argument" in errors[abspath(pod) + "/memory.low"]

    snap = vm.snapshot(abspath("kubepods.slice"), ["memory.min", "memory.low", "cgroup.kill", "nope"])
    assert vm.round_trips == before + 2  # one for the batch of writes, one for the whole snapshot
    assert set(snap) == {
        "",
        "kubepods-burstable.slice",
        "kubepods-burstable.slice/kubepods-burstable-podabc.slice",
        "kubepods-burstable.slice/kubepods-burstable-podabc.slice/cri-containerd-1.scope",
        "kubepods-burstable.slice/kubepods-burstable-podabc.slice/cri-containerd-2.scope",
    }
    assert snap[""] == {"memory.min": "104857600\n", "memory.low": "0\n", "cgroup.kill": None, "nope": None}
    leaf = snap["kubepods-burstable.slice/kubepods-burstable-podabc.slice/cri-containerd-1.scope"]
    assert leaf["memory.min"] == "max\n"
    reset(vm)
    assert vm.list_dirs(CGROUP_ROOT) == []


# -- (a) container memory.min alone ---------------------------------------------------------------------------


@pytest.mark.parametrize("recursiveprot", [False, True], ids=["plain", "recursiveprot"])
def test_container_min_alone_is_reclaimed(kernel_vm: VM, record_property, recursiveprot: bool) -> None:
    result = pressure_case(
        kernel_vm, f"(a) container min only [{'rprot' if recursiveprot else 'plain'}]", recursiveprot=recursiveprot
    )
    report(result, record_property)
    assert result.kept < 0.5, result.line()


# -- (b) every ancestor covers the child ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("driver", "hog"),
    [(SYSTEMD, "outside"), (CGROUPFS, "outside"), (SYSTEMD, "sibling-pod")],
    ids=["systemd-hog-outside", "cgroupfs-hog-outside", "systemd-hog-sibling-pod"],
)
def test_every_ancestor_set_keeps_the_cache(kernel_vm: VM, record_property, driver: str, hog: str) -> None:
    result = pressure_case(
        kernel_vm, f"(b) all ancestors 200M [{driver}, hog {hog}]", driver=driver, hog=hog,
        ancestor_min_mb={0: 200, 1: 200, 2: 200},
    )  # fmt: skip
    report(result, record_property)
    assert result.kept > 0.9, result.line()


# -- (c) only kubepods.slice set ------------------------------------------------------------------------------


@pytest.mark.parametrize("recursiveprot", [False, True], ids=["plain", "recursiveprot"])
def test_kubepods_only_neighbour_takes_the_protection(kernel_vm: VM, record_property, recursiveprot: bool) -> None:
    result = pressure_case(
        kernel_vm, f"(c) kubepods.slice only, hog in sibling pod [{'rprot' if recursiveprot else 'plain'}]",
        hog="sibling-pod", recursiveprot=recursiveprot, ancestor_min_mb={0: 200},
    )  # fmt: skip
    report(result, record_property)
    assert result.kept < 0.5, result.line()


@pytest.mark.parametrize("recursiveprot", [False, True], ids=["plain", "recursiveprot"])
def test_kubepods_only_hog_outside_control(kernel_vm: VM, record_property, recursiveprot: bool) -> None:
    """Control for (c): the same tree with the hog outside kubepods. Under memory_recursiveprot kubepods.slice's
    protection flows down to the lone pod and the cache stays, so in (c) it is the neighbour pod that takes it;
    without the option the zeros in between cut it off, as in (a)."""
    result = pressure_case(
        kernel_vm, f"(c-control) kubepods.slice only, hog outside [{'rprot' if recursiveprot else 'plain'}]",
        hog="outside", recursiveprot=recursiveprot, ancestor_min_mb={0: 200},
    )  # fmt: skip
    report(result, record_property)
    if recursiveprot:
        assert result.kept > 0.9, result.line()
    else:
        assert result.kept < 0.5, result.line()
