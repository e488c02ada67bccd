"""Shutdown: stop accepting, close idle connections, let requests in flight finish (``connection: close``),
abort what is left at the deadline — in-process, and for a real `qosgate serve` on SIGTERM."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from qosgate.serving.http import Blocking, Request, Response, Route, Router
from qosgate.serving.server import Limits, Listener
from tests.serving.wire import HANG, Closed, Gate, Wire, echo_routes, reloader, request, tls_context
from tests.support.processes import launcher
from tests.support.serving import RunningServer, serve_in_thread
from tests.support.tls import eventually

DEADLINE = 60.0  # the drain deadline where a test does not want it to expire


@pytest.fixture
def gates() -> Iterator[tuple[Gate, Gate]]:
    slow, stuck = Gate(), Gate()
    yield slow, stuck
    slow.release.set()
    stuck.release.set()


@pytest.fixture
def served(cert_dir: Path, gates: tuple[Gate, Gate]) -> Iterator[RunningServer]:
    """Two HTTPS listeners: /slow held by the first gate, /stuck by the second (a request that never ends)."""
    slow, stuck = gates

    def stuck_handler(_request: Request) -> Blocking:
        return Blocking(lambda: Response.json({"released": stuck.wait()}))

    routes = [*echo_routes(slow), Route("GET", "/stuck", stuck_handler, content_types=None)]
    source = reloader(cert_dir)
    listeners = [Listener("a", Router(routes), 0, "127.0.0.1", source),
                 Listener("b", Router(echo_routes(slow)), 0, "127.0.0.1", source)]
    limits = Limits(handshake_timeout=DEADLINE, first_request_timeout=DEADLINE, tls_shutdown_timeout=0.2)
    with serve_in_thread(listeners, limits) as running:
        yield running


def shutdown(running: RunningServer, pool: ThreadPoolExecutor, deadline: float) -> Future[None]:
    return pool.submit(running.call, running.server.shutdown(deadline), DEADLINE * 2)


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return True
    return False


def test_drain_finishes_in_flight_requests_with_connection_close_and_closes_idle_ones(
        served: RunningServer, cert_dir: Path, gates: tuple[Gate, Gate]) -> None:
    slow, _ = gates
    port = served.ports["a"]
    with Wire(port, tls_context(cert_dir)) as busy, Wire(port, tls_context(cert_dir)) as idle, \
            ThreadPoolExecutor(1) as pool:
        assert idle.call("GET", "/ping").status == 200
        busy.send(request("GET", "/slow"))
        eventually(lambda: slow.waiting == 1)
        stopping = shutdown(served, pool, DEADLINE)
        assert idle.closed_by_server() and idle.buffer == b""  # idle: closed at once, nothing sent
        eventually(lambda: all(refuses(p) for p in served.ports.values()), message="still accepting")
        assert not stopping.done() and busy.is_open()  # the drain waits for the request in flight
        slow.release.set()
        reply = busy.reply()
        assert reply.status == 200 and reply.body == b'{"released":true}' and reply.closes
        assert busy.closed_by_server()
        stopping.result(HANG)


def test_drain_deadline_aborts_requests_still_running(served: RunningServer, cert_dir: Path,
                                                     gates: tuple[Gate, Gate]) -> None:
    slow, stuck = gates
    port = served.ports["a"]
    with Wire(port, tls_context(cert_dir)) as finishing, Wire(port, tls_context(cert_dir)) as hung, \
            ThreadPoolExecutor(1) as pool:
        finishing.send(request("GET", "/slow"))
        hung.send(request("GET", "/stuck"))
        eventually(lambda: slow.waiting == 1 and stuck.waiting == 1)
        stopping = shutdown(served, pool, 0.5)
        slow.release.set()
        assert finishing.reply().closes
        stopping.result(HANG)  # returns at the deadline although /stuck never finished
        assert hung.closed_by_server()
        assert hung.buffer == b""  # aborted: no half answer


def test_a_request_half_received_when_the_drain_starts_is_still_answered(
        served: RunningServer, cert_dir: Path) -> None:
    body = b'{"late": true}'
    with Wire(served.ports["a"], tls_context(cert_dir)) as wire, ThreadPoolExecutor(1) as pool:
        wire.send(request("POST", "/echo", body)[:-4])
        eventually(lambda: any(c.in_message for c in served.server.connections))
        stopping = shutdown(served, pool, DEADLINE)
        assert wire.is_open(0.2)
        wire.send(body[-4:])
        reply = wire.reply()
        assert reply.body == body and reply.closes
        stopping.result(HANG)


def test_a_handshake_completing_during_the_drain_is_closed_not_served(
        served: RunningServer, cert_dir: Path, gates: tuple[Gate, Gate]) -> None:
    slow, _ = gates
    port = served.ports["a"]
    with Wire(port, tls_context(cert_dir)) as busy, Wire(port, tls_context(cert_dir), handshake=False) as late, \
            ThreadPoolExecutor(1) as pool:
        eventually(lambda: served.server.open == 2)  # accepted; its handshake is still to come
        busy.send(request("GET", "/slow"))
        eventually(lambda: slow.waiting == 1)
        stopping = shutdown(served, pool, DEADLINE)
        eventually(lambda: refuses(port))
        late.handshake()
        with pytest.raises(Closed):
            late.call("GET", "/ping")
        slow.release.set()
        assert busy.reply().closes
        stopping.result(HANG)  # nothing keeps the drain waiting until its deadline


def test_sigterm_fails_readiness_first_keeps_serving_during_the_delay_then_drains_and_exits_zero(
        tmp_path: Path) -> None:
    with launcher(tmp_path) as launch:
        served = launch.start("--local", "--shutdown-delay", "2", component="webhook")
        with Wire(served.ports["webhook"], tls_context(served.cert_dir)) as kept_alive:
            assert kept_alive.call("GET", "/readyz").status == 200
            served.process.send_signal(signal.SIGTERM)
            eventually(lambda: served.health("/readyz").status_code == 503, timeout=HANG)
            assert "shutting down" in served.health("/readyz").text
            # Endpoints are still dropping the pod: what reaches it meanwhile is served.
            assert kept_alive.call("GET", "/healthz").status == 200
            assert kept_alive.closed_by_server()
        assert served.process.wait(timeout=60) == 0
        assert "Traceback" not in served.log.read_text()
