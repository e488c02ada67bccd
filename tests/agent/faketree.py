"""A directory laid out like a node's cgroup2 hierarchy (and the /proc files the agent reads), for agent tests
and bench/bench_agent.py. Files are plain files: writes are not rounded to pages like the kernel's."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from qosgate.agent.hostfacts import HostFiles
from qosgate.core.cgtree import CGROUPFS, SYSTEMD, kubepods_dir, pod_dir, qos_dir

MiB = 2**20


class FakeNode:
    def __init__(self, base: Path, driver: str = SYSTEMD, *, recursiveprot: bool = True, cgroup2: bool = True,
                 memory_controller: bool = True, total_memory: int = 16 * 2**30, boot_id: str = "boot-1") -> None:
        self.base = base
        self.driver = driver
        self.root = base / "cgroup"
        self.proc = base / "proc"
        self.root.mkdir(parents=True, exist_ok=True)
        controllers = "cpuset cpu io memory pids\n" if memory_controller else "cpuset cpu io pids\n"
        (self.root / "cgroup.controllers").write_text(controllers)
        options = "rw,nosuid,nodev,noexec,relatime" + (",nsdelegate,memory_recursiveprot" if recursiveprot else "")
        fstype = "cgroup2" if cgroup2 else "tmpfs"
        (self.proc / "self").mkdir(parents=True, exist_ok=True)
        (self.proc / "self" / "mountinfo").write_text(
            f"22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
            f"35 22 0:30 / {self.root} {options} shared:9 - {fstype} {fstype} {options}\n")
        (self.proc / "meminfo").write_text(f"MemTotal:       {total_memory // 1024} kB\nMemFree: 1 kB\n")
        (self.proc / "sys" / "kernel" / "random").mkdir(parents=True, exist_ok=True)
        (self.proc / "sys" / "kernel" / "random" / "boot_id").write_text(boot_id + "\n")
        self.kdir = kubepods_dir(driver)
        self.mkcg(self.kdir)
        for qos in ("burstable", "besteffort"):
            self.mkcg(f"{self.kdir}/{qos_dir(driver, qos)}")
        self.mkcg("system.slice" if driver == SYSTEMD else "system")

    # -- cgroups --------------------------------------------------------------------------------------------
    def mkcg(self, rel: str, min: int = 0, low: int = 0, current: int = 0) -> str:
        path = self.root / rel
        path.mkdir(parents=True, exist_ok=True)
        for name, value in (("memory.min", min), ("memory.low", low), ("memory.current", current)):
            if not (path / name).exists() or value:
                (path / name).write_text(f"{value}\n")
        return rel

    def pod(self, qos: str = "burstable", containers: tuple[int, ...] = (100 * MiB,), *, uid: str | None = None,
            pod_min: int = 0, pod_low: int = 0, runtime: str = "containerd",
            current: int | None = None) -> tuple[str, list[str]]:
        """A pod cgroup and its containers (each with the given memory.min); returns (pod path, container ids)."""
        uid = uid or str(uuid.uuid4())
        rel = f"{self.kdir}/{pod_dir(self.driver, qos, uid)}"
        self.mkcg(rel, pod_min, pod_low)
        ids = []
        for value in containers:
            cid = uuid.uuid4().hex + uuid.uuid4().hex
            ids.append(cid)
            self.mkcg(f"{rel}/{self.container_name(cid, runtime)}", value,
                      current=value if current is None else current)
        return rel, ids

    def container_name(self, cid: str, runtime: str = "containerd") -> str:
        if self.driver == CGROUPFS:
            return f"crio-{cid}" if runtime == "crio" else cid
        return f"{'crio' if runtime == 'crio' else 'cri-containerd'}-{cid}.scope"

    def pod_path(self, qos: str, uid: str) -> str:
        return f"{self.kdir}/{pod_dir(self.driver, qos, uid)}"

    def qos_path(self, qos: str) -> str:
        sub = qos_dir(self.driver, qos)
        return f"{self.kdir}/{sub}" if sub else self.kdir

    def min(self, rel: str) -> int:
        return int((self.root / rel / "memory.min").read_text())

    def set(self, rel: str, value: int | str, name: str = "memory.min") -> None:
        (self.root / rel / name).write_text(f"{value}\n")

    def remove(self, rel: str) -> None:
        shutil.rmtree(self.root / rel)

    def host_files(self, nri_config: str | None = None) -> HostFiles:
        return HostFiles(str(self.root), str(self.proc), nri_config)
