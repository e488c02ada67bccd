"""The agent's CgroupFS interface over the kernel VM's console (VM.snapshot / VM.write_many), so the agent's
own pass runs against a real kernel's cgroupfs from the host."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from .vm import CGROUP_ROOT, VM


class VMCgroupFS:
    def __init__(self, vm: VM, root: str = CGROUP_ROOT) -> None:
        self.vm = vm
        self.root = root.rstrip("/")

    def _abs(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def snapshot(self, rel: str, files: Sequence[str],
                 max_depth: int | None = None) -> dict[str, dict[str, str | None]]:
        rc, _ = self.vm.run(f"test -d {shlex.quote(self._abs(rel))}")
        if rc != 0:
            return {}
        snap = self.vm.snapshot(self._abs(rel), list(files))
        if max_depth is None:
            return snap
        return {k: v for k, v in snap.items() if (k.count("/") + 1 if k else 0) <= max_depth}

    def read(self, rel: str) -> str | None:
        rc, out = self.vm.run(f"cat {shlex.quote(self._abs(rel))}")
        return out if rc == 0 else None

    def write(self, values: Sequence[tuple[str, str]]) -> dict[str, str]:
        errors = self.vm.write_many([(self._abs(rel), value) for rel, value in values], check=False)
        prefix = self.root + "/"
        return {path.removeprefix(prefix): message for path, message in errors.items()}
