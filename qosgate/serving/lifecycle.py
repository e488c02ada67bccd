"""One shutdown protocol for every process (architecture §3.5).

SIGTERM (or SIGINT) → readiness fails at once (endpoints drop the pod) → after ``shutdown_delay`` the
server stops accepting and drains requests in flight, bounded by ``graceful_timeout`` → the components'
stoppers run in reverse order of registration. A second SIGINT skips the waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from qosgate.serving.health import Readiness
from qosgate.serving.server import Server, run_in_loop

log = logging.getLogger("qosgate.serving")


class Lifecycle:
    """What a process started: readiness checks to report and stoppers to run, newest first."""

    def __init__(self) -> None:
        self.readiness = Readiness()
        self._stoppers: list[Callable[[], object]] = []

    def on_stop(self, stopper: Callable[[], object]) -> None:
        self._stoppers.append(stopper)

    def stop(self) -> None:
        while self._stoppers:
            stopper = self._stoppers.pop()
            try:
                stopper()
            except Exception:
                log.exception("stopping %r failed", stopper)


async def serve_until_signalled(server: Server, lifecycle: Lifecycle, *, shutdown_delay: float,
                                graceful_timeout: float, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    hurry = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second %s: shutting down now", sig.name)
            hurry.set()
        stop.set()

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    await server.start()
    try:
        await stop.wait()
        log.info("shutdown requested: failing readiness, then draining after %.1fs", shutdown_delay)
        lifecycle.readiness.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), shutdown_delay)
        await server.shutdown(0.0 if hurry.is_set() else graceful_timeout)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        lifecycle.stop()


def run(server: Server, lifecycle: Lifecycle, *, shutdown_delay: float, graceful_timeout: float) -> None:
    """Blocking: serve until SIGTERM/SIGINT, then drain and stop (the `qosgate serve` process)."""
    run_in_loop(lambda: serve_until_signalled(server, lifecycle, shutdown_delay=shutdown_delay,
                                              graceful_timeout=graceful_timeout))
