"""A server on a background thread with its own event loop: for tools embedding one (the simulator's
in-process extender) and for tests. A process serving for real uses qosgate.serving.lifecycle.run."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from qosgate.serving.server import Limits, Listener, Server, event_loop_factory


class RunningServer:
    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.server, self.loop, self.thread = server, loop, thread

    @property
    def ports(self) -> dict[str, int]:
        return self.server.ports

    def call(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def shutdown(self, graceful_timeout: float = 5.0) -> None:
        # Not again once stopped: the loop closes right after a shutdown, and a coroutine handed to it then
        # never runs (the caller would wait out the whole timeout).
        if self.thread.is_alive() and self.server.started and not self.server.stopped:
            with contextlib.suppress(RuntimeError):
                self.call(self.server.shutdown(graceful_timeout), timeout=graceful_timeout + 30)


@contextlib.contextmanager
def serve_in_thread(listeners: Sequence[Listener], limits: Limits | None = None) -> Iterator[RunningServer]:
    """Serve `listeners` (port 0 = a free port) until the block ends; yields once every port accepts."""
    server = Server(listeners, limits)
    server.bind()
    loop = event_loop_factory()()
    ready = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_until_complete(server.wait_stopped())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=target, name="qosgate-server", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise RuntimeError("server failed to start") from failure[0]
    running_server = RunningServer(server, loop, thread)
    try:
        yield running_server
    finally:
        running_server.shutdown()
        thread.join(30)
