"""Kernel-VM suite: the `kernel_vm` marker, the shared VM fixture, and a summary of the measured figures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .scenario import DISKS, FIGURES
from .vm import VM, host_kit

REQUIRE_ENV = "QOSGATE_REQUIRE_KERNEL_VM"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kernel_vm: boots the distribution kernel under QEMU (TCG) and measures real cgroup v2 behaviour; "
        f"skipped when qemu/kernel/busybox are missing unless {REQUIRE_ENV}=1",
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if FIGURES:
        terminalreporter.section("kernel VM figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def require_kit():
    kit, missing = host_kit()
    if kit is None:
        reason = "kernel VM prerequisites missing: " + "; ".join(missing)
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} (and {REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    return kit


class _Guest:
    """The session's guest, booted on first use and booted again if a test left it dead (a command that missed
    its host-side deadline kills the VM rather than trust it with the next command)."""

    def __init__(self) -> None:
        self.vm: VM | None = None
        self.boots = 0
        self.boot_error: str | None = None

    def get(self) -> VM:
        if self.vm is not None and self.vm.alive:
            return self.vm
        if self.vm is not None:
            self.vm.close()
        kit = require_kit()
        if self.boot_error:  # one failed boot is enough: do not pay its timeout again for every test
            pytest.fail(f"kernel VM did not boot: {self.boot_error}", pytrace=False)
        self.vm = VM(DISKS, kit=kit)
        try:
            self.vm.start()
        except Exception as exc:
            self.boot_error = str(exc)
            raise
        self.boots += 1
        FIGURES.append(
            f"boot #{self.boots}: {self.vm.boot_seconds:.1f}s (kernel {kit.kernel_version}, -accel tcg, 512 MB)"
        )
        return self.vm

    def close(self) -> None:
        if self.vm is not None:
            self.vm.close()


@pytest.fixture(scope="session")
def _kernel_guest() -> Iterator[_Guest]:
    guest = _Guest()
    try:
        yield guest
    finally:
        guest.close()


@pytest.fixture
def kernel_vm(_kernel_guest: _Guest) -> VM:
    """The shared booted guest (each scenario cleans the cgroup tree itself)."""
    return _kernel_guest.get()
