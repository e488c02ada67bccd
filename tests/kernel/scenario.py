"""Kubernetes-shaped cgroup trees and a node-wide memory-pressure experiment inside a kernel VM (stdlib only).

The experiment: a "container" cgroup fills N MB of page cache from its own virtio disk (a holder process keeps
the device open, or the kernel drops a block device's cache on its last close), its memory.min and its
ancestors' memory.min are set as asked, then a "hog" in another cgroup reads ~1,200 MB from a second disk in a
512 MB guest, which forces global (node-wide) reclaim. The container's file bytes (memory.stat `file`) and
memory.current are read before and after.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .vm import CGROUP_ROOT, VM, Disk, MiB

# Guest device names follow the order of DISKS: the first disk is /dev/vda.
CONTAINER_DISK, HOG_DISK = "/dev/vda", "/dev/vdb"
DISKS = (Disk("container-data", 200), Disk("hog-data", 1300))

SYSTEMD, CGROUPFS = "systemd", "cgroupfs"

# Lines measured by the tests; conftest prints them in the pytest summary whatever the capture mode.
FIGURES: list[str] = []


def pod_path(driver: str, qos: str, uid: str) -> str:
    """The pod cgroup, relative to the cgroup2 root, as the kubelet names it with the given cgroup driver."""
    if driver == SYSTEMD:
        uid_ = uid.replace("-", "_")
        if qos == "guaranteed":
            return f"kubepods.slice/kubepods-pod{uid_}.slice"
        return f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{uid_}.slice"
    if driver == CGROUPFS:
        return f"kubepods/pod{uid}" if qos == "guaranteed" else f"kubepods/{qos}/pod{uid}"
    raise ValueError(f"unknown cgroup driver {driver!r}")


def container_path(driver: str, qos: str, uid: str, container_id: str) -> str:
    leaf = f"cri-containerd-{container_id}.scope" if driver == SYSTEMD else container_id
    return f"{pod_path(driver, qos, uid)}/{leaf}"


def ancestors(path: str) -> list[str]:
    """Proper ancestors of a relative cgroup path, outermost first (the root excluded)."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def abspath(rel: str) -> str:
    return f"{CGROUP_ROOT}/{rel}" if rel else CGROUP_ROOT


def make_cgroups(vm: VM, *paths: str) -> None:
    """mkdir each cgroup, enabling +memory in cgroup.subtree_control of the root and of every ancestor."""
    lines = ["set -e"]
    for rel in paths:
        lines.append(f"mkdir -p {shlex.quote(abspath(rel))}")
        for parent in ["", *ancestors(rel)]:
            lines.append(f"echo +memory > {shlex.quote(abspath(parent) + '/cgroup.subtree_control')}")
    vm.sh("\n".join(lines))


RESET = f"""cd {CGROUP_ROOT}
for top in */; do
    top=${{top%/}}
    [ -d "$top" ] || continue
    echo 1 > "$top/cgroup.kill"
    n=0
    while grep -q 'populated 1' "$top/cgroup.events" && [ "$n" -lt 200 ]; do sleep 0.05; n=$((n + 1)); done
    find "$top" -depth -type d | while IFS= read -r d; do rmdir "$d"; done
done
sync
echo 3 > /proc/sys/vm/drop_caches
left=$(ls -d */ 2>/dev/null | wc -l)
[ "$left" = 0 ] || {{ echo "cgroups left: $(ls -d */)"; exit 1; }}
"""


def reset(vm: VM, recursiveprot: bool | None = None) -> None:
    """Kill every process in a non-root cgroup, remove every cgroup, drop caches; remount cgroup2 when the
    memory_recursiveprot option must change (an empty hierarchy makes the new option take effect)."""
    vm.sh(RESET, timeout=60)
    if recursiveprot is not None and recursiveprot != ("memory_recursiveprot" in vm.mount_options()):
        vm.mount_cgroup2(recursiveprot)
        if recursiveprot != ("memory_recursiveprot" in vm.mount_options()):
            raise AssertionError(f"cgroup2 remount did not set memory_recursiveprot={recursiveprot}")


def memory_figures(vm: VM, rel: str) -> dict[str, int]:
    """{"file": memory.stat file bytes, "current": memory.current, "min": memory.min} of one cgroup."""
    snap = vm.snapshot(abspath(rel), ["memory.stat", "memory.current", "memory.min"])[""]
    stat = dict(line.split() for line in (snap["memory.stat"] or "").splitlines() if line)
    return {
        "file": int(stat["file"]),
        "current": int((snap["memory.current"] or "0").strip()),
        "min": int((snap["memory.min"] or "0").strip()),
    }


@dataclass
class PressureResult:
    name: str
    container: str
    hog: str
    recursiveprot: bool
    mins: dict[str, int]
    before: dict[str, int]
    after: dict[str, int]
    fill_seconds: float
    hog_seconds: float
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def kept(self) -> float:
        """Share of the container's page cache still resident after the pressure."""
        return self.after["file"] / self.before["file"] if self.before["file"] else 0.0

    def line(self) -> str:
        mins = ", ".join(f"{k.rsplit('/', 1)[-1]}={v // MiB}M" for k, v in self.mins.items()) or "none"
        return (
            f"{self.name}: file {self.before['file'] / MiB:.0f} -> {self.after['file'] / MiB:.0f} MB "
            f"(kept {self.kept:.0%}), memory.current {self.before['current'] / MiB:.0f} -> "
            f"{self.after['current'] / MiB:.0f} MB; recursiveprot={'on' if self.recursiveprot else 'off'}; "
            f"memory.min: {mins}; hog in {self.hog} ({self.hog_seconds:.1f}s)"
        )


def hog_path(driver: str, placement: str, qos: str = "burstable") -> str:
    """Where the hog runs: "sibling-pod" (another pod of the same QoS class), "besteffort-pod" (a pod of another
    QoS class under kubepods) or "outside" (a system service beside kubepods)."""
    if placement == "sibling-pod":
        return container_path(driver, qos, "99999999-hog0-4000-8000-000000000000", "hog0")
    if placement == "besteffort-pod":
        return container_path(driver, "besteffort", "99999999-hog1-4000-8000-000000000000", "hog1")
    if placement == "outside":
        return "system.slice/hog.service"
    raise ValueError(f"unknown hog placement {placement!r}")


def pressure_case(
    vm: VM,
    name: str,
    *,
    driver: str = SYSTEMD,
    qos: str = "burstable",
    container_min_mb: int = 200,
    ancestor_min_mb: dict[int, int] | None = None,
    hog: str = "outside",
    recursiveprot: bool = False,
    container_mb: int = 150,
    hog_mb: int = 1200,
    before_pressure: Callable[[VM], dict[str, str]] | None = None,
) -> PressureResult:
    """Run the experiment on a clean hierarchy. ancestor_min_mb maps an ancestor's depth (0 = kubepods[.slice],
    1 = the QoS slice, 2 = the pod) to the memory.min, in MB, that the test sets on it. `before_pressure` runs
    once the container's cache is filled and before the hog starts (e.g. one node-agent pass); what it returns
    lands in the result's `extra`."""
    reset(vm, recursiveprot)
    container = container_path(driver, qos, "0b5d1f2e-7c3a-4e8b-9d6f-1a2b3c4d5e6f", "c0ffee0000000001")
    hog_cg = hog_path(driver, hog, qos)
    make_cgroups(vm, container, hog_cg)

    mins: dict[str, int] = {}
    chain = ancestors(container)
    for depth, mb in sorted((ancestor_min_mb or {}).items()):
        mins[chain[depth]] = mb * MiB
    mins[container] = container_min_mb * MiB
    vm.write_many({abspath(rel) + "/memory.min": value for rel, value in mins.items()})

    # The container: a holder keeps the disk open (fd 3, inherited), then dd faults N MB into the page cache.
    started = time.monotonic()
    vm.sh(
        f"sh -c 'echo $$ > {abspath(container)}/cgroup.procs || exit 1; exec 3<{CONTAINER_DISK}; "
        f"sleep 1000000 </dev/null >/dev/null 2>&1 & "
        f"dd if={CONTAINER_DISK} of=/dev/null bs=1M count={container_mb} 2>/dev/null'",
        timeout=120,
    )
    fill_seconds = time.monotonic() - started
    before = memory_figures(vm, container)
    extra = before_pressure(vm) if before_pressure is not None else {}

    started = time.monotonic()
    vm.sh(
        f"sh -c 'echo $$ > {abspath(hog_cg)}/cgroup.procs || exit 1; "
        f"exec dd if={HOG_DISK} of=/dev/null bs=1M count={hog_mb} 2>/dev/null'",
        timeout=300,
    )
    hog_seconds = time.monotonic() - started
    after = memory_figures(vm, container)
    return PressureResult(name, container, hog_cg, recursiveprot, mins, before, after, fill_seconds, hog_seconds,
                          extra)
