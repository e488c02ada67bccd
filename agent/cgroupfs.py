"""Access to a cgroup v2 hierarchy, as an interface the agent's pass is written against.

Three implementations plug in: `HostCgroupFS` over a directory (the real /sys/fs/cgroup, or a temporary
directory laid out like cgroupfs in tests and benchmarks), and in tests/kernel an adapter over the QEMU
guest's console (`VM.snapshot` / `VM.write_many`). Paths are relative to the cgroup root, "/"-separated.

Nothing here raises on a missing or unreadable cgroup: a snapshot simply holds None for a file it could not
read and leaves out directories that vanished; a write returns its error text. The pass decides what that
means (qosgate.core.ancestors: an unknown value is never lowered past, a failed write is not remembered).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

Snapshot = dict[str, dict[str, str | None]]


class CgroupFS(Protocol):
    def snapshot(self, rel: str, files: Sequence[str], max_depth: int | None = None) -> Snapshot:
        """{directory relative to `rel` ("" = `rel` itself): {file: content or None}} for `rel` and every
        directory below it (down to `max_depth` levels); {} when `rel` does not exist."""
        ...

    def read(self, rel: str) -> str | None:
        """One file's content, None when absent or unreadable."""
        ...

    def write(self, values: Sequence[tuple[str, str]]) -> dict[str, str]:
        """Write each (file, value) in order, one write(2) each; {file: error} for the ones that failed."""
        ...


def _read(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 65536).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


class HostCgroupFS:
    """A cgroupfs mounted (or laid out) at `root`."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def snapshot(self, rel: str, files: Sequence[str], max_depth: int | None = None) -> Snapshot:
        base = self._path(rel)
        result: Snapshot = {}
        stack: list[tuple[str, str, int]] = [("", base, 0)]
        while stack:
            key, path, depth = stack.pop()
            contents = {name: _read(f"{path}/{name}") for name in files}
            if all(v is None for v in contents.values()) and files and not os.path.isdir(path):
                continue  # vanished while we walked
            result[key] = contents
            if max_depth is not None and depth >= max_depth:
                continue
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append((f"{key}/{entry.name}" if key else entry.name, entry.path, depth + 1))
            except OSError:
                if key == "" and not os.path.isdir(path):
                    return {}
        return result

    def read(self, rel: str) -> str | None:
        return _read(self._path(rel))

    def write(self, values: Sequence[tuple[str, str]]) -> dict[str, str]:
        errors: dict[str, str] = {}
        for rel, value in values:
            try:
                # No O_CREAT: a cgroup file that does not exist (vanished cgroup) must fail, never be created.
                # O_TRUNC is what `echo > memory.min` does (kernfs accepts it); a plain-file tree needs it.
                fd = os.open(self._path(rel), os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            except OSError as exc:
                errors[rel] = exc.strerror or str(exc)
                continue
            try:
                os.write(fd, value.encode())
            except OSError as exc:
                errors[rel] = exc.strerror or str(exc)
            finally:
                os.close(fd)
        return errors
