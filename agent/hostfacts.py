"""The host files the agent reads besides the cgroup tree: mount table, memory size, boot id, NRI config."""

from __future__ import annotations

import os
from dataclasses import dataclass

from qosgate.core.nodecaps import CgroupMount, NriConfig, parse_meminfo_total, parse_mountinfo, parse_nri_config


def read_text(path: str, limit: int = 1 << 20) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(limit)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class HostFacts:
    mount: CgroupMount
    total_memory: int | None
    nri: NriConfig | None
    nri_problem: str | None


@dataclass(frozen=True, slots=True)
class HostFiles:
    cgroup_root: str
    proc_root: str = "/proc"
    nri_config: str | None = "/etc/nri/memory-qos/config.yaml"

    def boot_id(self) -> str | None:
        text = read_text(os.path.join(self.proc_root, "sys/kernel/random/boot_id"))
        return text.strip() if text else None

    def facts(self) -> HostFacts:
        mountinfo = read_text(os.path.join(self.proc_root, "self/mountinfo")) or ""
        mount = parse_mountinfo(mountinfo, os.path.abspath(self.cgroup_root))
        total = parse_meminfo_total(read_text(os.path.join(self.proc_root, "meminfo")))
        nri: NriConfig | None = None
        problem = None
        if self.nri_config:
            text = read_text(self.nri_config)
            if text is None:
                problem = f"NRI memory-qos config {self.nri_config} not readable"
            else:
                nri = parse_nri_config(text)
                if nri is None:
                    problem = f"NRI memory-qos config {self.nri_config} is not a configuration"
                elif nri.problems:
                    problem = f"NRI memory-qos config {self.nri_config}: " + "; ".join(nri.problems)
        return HostFacts(mount, total, nri, problem)
