"""The loopback Service the real-cluster tests put in front of qosgate's replicas: round robin over ready
endpoints, kinder than kube-proxy by default (fast tests), as strict as a cluster with ``Probing`` (the
failover figures). No control plane needed: plain TCP backends and readiness endpoints."""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realcluster.balancer import Backend, Probing, TcpBalancer
from tests.realcluster.controlplane import free_port, wait_until


class Named(socketserver.ThreadingTCPServer):
    """Answers every connection with its name: which endpoint a connection reached."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: bytes) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(name)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class Readiness(http.server.ThreadingHTTPServer):
    """A /readyz whose answer the test flips."""

    daemon_threads = True

    def __init__(self) -> None:
        self.ok = True
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if outer.ok else 503)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/readyz"


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[TcpBalancer]:
    running = TcpBalancer(name="svc", directory=tmp_path).start()
    yield running
    running.stop()


def reached(balancer: TcpBalancer) -> bytes | None:
    """The endpoint one new connection reached; None when the Service refused it."""
    try:
        with socket.create_connection(("127.0.0.1", balancer.port), timeout=5) as connection:
            return connection.recv(64) or None
    except OSError:
        return None


def test_connections_go_round_robin_over_ready_endpoints(balancer: TcpBalancer) -> None:
    a, b = Named(b"a"), Named(b"b")
    balancer.set_backends([Backend(a.port), Backend(b.port)])
    balancer.probe_now()
    assert {reached(balancer) for _ in range(6)} == {b"a", b"b"}


def test_by_default_a_refused_connection_moves_on_to_the_next_endpoint(balancer: TcpBalancer) -> None:
    live = Named(b"live")
    balancer.set_backends([Backend(free_port()), Backend(live.port)])  # nothing listens on the first
    balancer.probe_now()
    assert [reached(balancer) for _ in range(6)] == [b"live"] * 6


def test_strict_probing_refuses_what_the_dealt_endpoint_refuses_until_its_probe_fails(
        balancer: TcpBalancer) -> None:
    live, dying, readiness = Named(b"live"), Named(b"dying"), Readiness()
    strict = Probing(period=0.3, failure_threshold=3, retry_refused=False)
    balancer.set_backends([Backend(live.port), Backend(dying.port, readiness.url)], strict)
    balancer.probe_now()
    assert {reached(balancer) for _ in range(6)} == {b"live", b"dying"}

    dying.shutdown()
    dying.server_close()  # crashed: its port refuses
    readiness.ok = False
    went = time.monotonic()
    answers = [reached(balancer) for _ in range(6)]
    assert None in answers and b"live" in answers  # the dead endpoint is still dealt: its share is refused
    wait_until(lambda: balancer.ready_ports() == [live.port], 10, "the failing probe to drop the endpoint")
    assert time.monotonic() - went >= 0.3 * 2  # not before the third failure in a row (0, +0.3, +0.6 s)
    assert [reached(balancer) for _ in range(6)] == [b"live"] * 6
