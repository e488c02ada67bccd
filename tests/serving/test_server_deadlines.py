"""No client can hold a connection open without progress, and a flood degrades to refusals (issue 10).

Every phase of a connection has a deadline — TLS handshake, first request, a request's headers, its body,
keep-alive idleness — and the connection cap makes room by evicting the longest-idle connection, else
refuses new ones. Deadlines here are tiny (``TICK``) so the tests are quick; what is asserted is that the
server closes the connection at all, *while the client is still trickling bytes* (the trickle lasts many
deadlines), and that other clients are served meanwhile — never how fast anything happens.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qosgate.serving.metrics import HTTP_CONNECTIONS_REFUSED
from qosgate.serving.server import Limits
from tests.serving.wire import HANG, Closed, Gate, Wire, echo_routes, request, serving, tls_context
from tests.support.processes import free_port
from tests.support.tls import eventually, https_client

TICK = 0.3  # every deadline in this module, seconds
TRICKLE = 40  # a trickling client keeps going for this many deadlines: long enough to prove none is extended
TIGHT = Limits(handshake_timeout=TICK, first_request_timeout=TICK, header_timeout=TICK, body_timeout=TICK,
               keepalive_timeout=TICK)
LOOPS = ["uvloop", "asyncio"]


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The TLS handshake deadline is implemented by the event loop itself: test both loops."""
    if request.param == "asyncio":
        monkeypatch.setenv("QOSGATE_EVENT_LOOP", "asyncio")
    return str(request.param)


@pytest.fixture
def gate() -> Iterator[Gate]:
    held = Gate()
    yield held
    held.release.set()


@pytest.fixture
def tight(cert_dir: Path, gate: Gate) -> Iterator[int]:
    with serving(echo_routes(gate), cert_dir, TIGHT) as (_server, port):
        yield port


def trickle(wire: Wire, data: bytes) -> bool:
    """Send `data` a byte at a time over TRICKLE deadlines; True when the server closed before the end."""
    pause = TICK * TRICKLE / len(data)
    for byte in data:
        try:
            wire.send(bytes([byte]))
        except OSError:
            return True
        if not wire.is_open(pause):
            return True
    return False


def served_meanwhile(port: int, cert_dir: Path) -> bool:
    with Wire(port, tls_context(cert_dir)) as other:
        return other.call("GET", "/ping").body == b"pong"


# --- each phase of one connection ---------------------------------------------------------------------------

def test_connection_idle_after_the_tls_handshake_is_closed(tight: int, cert_dir: Path) -> None:
    with Wire(tight, tls_context(cert_dir)) as idle:
        assert served_meanwhile(tight, cert_dir)
        assert idle.closed_by_server()
        assert idle.buffer == b""  # closed silently: no request was started


def test_idle_keep_alive_connection_is_closed(tight: int, cert_dir: Path) -> None:
    with Wire(tight, tls_context(cert_dir)) as wire:
        assert wire.call("GET", "/ping").status == 200
        assert served_meanwhile(tight, cert_dir)
        assert wire.closed_by_server()


def test_slow_headers_are_cut_off_with_408_while_bytes_keep_arriving(tight: int, cert_dir: Path) -> None:
    with Wire(tight, tls_context(cert_dir)) as slow:
        assert trickle(slow, request("GET", "/ping", headers={"x-slow": "s" * 60})), "slow headers never cut off"
        reply = slow.reply()
        assert reply.status == 408 and reply.closes
        assert served_meanwhile(tight, cert_dir)


def test_slow_body_is_cut_off_with_408_while_bytes_keep_arriving(tight: int, cert_dir: Path) -> None:
    body = b'"' + b"b" * 60 + b'"'
    with Wire(tight, tls_context(cert_dir)) as slow:
        slow.send(request("POST", "/echo", headers={"content-type": "application/json",
                                                    "content-length": str(len(body))}))
        assert trickle(slow, body), "slow body never cut off"
        reply = slow.reply()
        assert reply.status == 408 and reply.closes
        assert served_meanwhile(tight, cert_dir)


def test_stray_line_breaks_do_not_keep_an_idle_connection_open(tight: int, cert_dir: Path) -> None:
    # Bytes that start no request must not count as activity, or "\r\n" every few seconds holds a slot forever.
    with Wire(tight, tls_context(cert_dir)) as wire:
        assert trickle(wire, b"\r\n" * 60), "line breaks kept the connection open"


def test_a_half_sent_request_pipelined_behind_another_still_has_a_deadline(tight: int, cert_dir: Path) -> None:
    with Wire(tight, tls_context(cert_dir)) as wire:
        wire.send(request("GET", "/ping") + b"GET /ping HTTP/1.1\r\nHo")
        assert wire.reply().body == b"pong"
        assert wire.closed_by_server()
        reply = wire.reply()
        assert reply.status == 408 and reply.closes


def test_a_half_sent_request_behind_a_busy_one_is_refused_once_that_one_is_answered(
        tight: int, cert_dir: Path, gate: Gate) -> None:
    with Wire(tight, tls_context(cert_dir)) as wire:
        wire.send(request("GET", "/slow") + b"GET /ping HTTP/1.1\r\nHo")
        eventually(lambda: gate.waiting == 1)
        assert wire.is_open(TICK * 3)  # the second request's deadline passes while the first is in the pool
        gate.release.set()
        assert wire.reply().body == b'{"released":true}'
        assert wire.closed_by_server()
        assert wire.reply().status == 408


def test_a_request_in_the_worker_pool_outlives_the_deadlines(tight: int, cert_dir: Path, gate: Gate) -> None:
    # Deadlines bound what the *client* owes; a slow answer of ours is not the client's fault.
    with Wire(tight, tls_context(cert_dir)) as wire:
        wire.send(request("GET", "/slow"))
        eventually(lambda: gate.waiting == 1)
        assert wire.is_open(TICK * 5)
        gate.release.set()
        assert wire.reply().status == 200


def test_tls_handshake_that_never_starts_is_closed(cert_dir: Path, loop: str) -> None:
    limits = Limits(handshake_timeout=TICK, first_request_timeout=HANG * 3)
    with serving(echo_routes(), cert_dir, limits) as (_server, port), Wire(port, tls_context(cert_dir),
                                                                            handshake=False) as silent:
        assert served_meanwhile(port, cert_dir)
        assert silent.closed_by_server()


def test_tls_handshake_stalled_midway_is_closed(cert_dir: Path, loop: str) -> None:
    limits = Limits(handshake_timeout=TICK, first_request_timeout=HANG * 3)
    hello = _client_hello(cert_dir)
    with serving(echo_routes(), cert_dir, limits) as (_server, port), Wire(port, tls_context(cert_dir),
                                                                            handshake=False) as stalled:
        stalled.send(hello[: len(hello) // 2])
        assert served_meanwhile(port, cert_dir)
        assert stalled.closed_by_server()


def _client_hello(cert_dir: Path) -> bytes:
    """A real ClientHello, from a memory BIO handshake that is never completed."""
    import ssl

    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_context(cert_dir).wrap_bio(incoming, outgoing, server_hostname="qosgate-webhook.qosgate-system.svc")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# --- the connection cap -------------------------------------------------------------------------------------

CAP = 4
CAPPED = Limits(max_connections=CAP)


def test_at_the_cap_the_longest_idle_connection_makes_room(cert_dir: Path) -> None:
    with serving(echo_routes(), cert_dir, CAPPED) as (_server, port):
        idle = []
        for _ in range(CAP):
            wire = Wire(port, tls_context(cert_dir))
            assert wire.call("GET", "/ping").status == 200
            idle.append(wire)
        with Wire(port, tls_context(cert_dir)) as newcomer:
            assert newcomer.call("GET", "/ping").status == 200
            assert idle[0].closed_by_server()  # the oldest idle one went
            assert all(wire.is_open() for wire in idle[1:])
            assert all(wire.call("GET", "/ping").status == 200 for wire in idle[1:])
        for wire in idle:
            wire.close()


def test_at_the_cap_with_nothing_idle_new_connections_are_refused_until_one_frees(
        cert_dir: Path, gate: Gate) -> None:
    refused = HTTP_CONNECTIONS_REFUSED.labels("test", "connection limit")
    before = refused._value.get()
    with serving(echo_routes(gate), cert_dir, CAPPED) as (served, port):
        busy = [Wire(port, tls_context(cert_dir)) for _ in range(CAP)]
        for wire in busy:
            wire.send(request("GET", "/slow"))
        eventually(lambda: gate.waiting == CAP)
        # Refused at accept: closed before its TLS handshake costs the server anything.
        with pytest.raises((Closed, OSError)):
            Wire(port, tls_context(cert_dir)).call("GET", "/ping")
        assert refused._value.get() > before
        gate.release.set()
        assert all(wire.reply().status == 200 for wire in busy)
        for wire in busy:
            wire.close()
        eventually(lambda: served.server.open == 0)
        assert served_meanwhile(port, cert_dir)


# --- file-descriptor exhaustion in a real `qosgate serve` ---------------------------------------------------

FD_LIMIT = 160
FLOOD = 600


def _flood(port: int, count: int) -> list[socket.socket]:
    """`count` connections that never send a byte (some would be TLS handshakes that never start)."""
    sockets = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=HANG)
        except OSError:
            continue  # a full backlog may refuse: that is what a flood gets
        sockets.append(sock)
    return sockets


def test_fd_limit_flood_degrades_to_refusals_without_a_log_storm_and_service_resumes(
        tmp_path: Path, cert_dir: Path) -> None:
    ports = {"webhook": free_port(), "health": free_port()}
    log = tmp_path / "serve.log"

    def small_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))

    command = [sys.executable, "-m", "qosgate.cli.main", "serve", "webhook", "--local", "--cert-dir",
               str(tmp_path / "certs"), "--host", "127.0.0.1", "--port", str(ports["webhook"]),
               "--health-port", str(ports["health"]), "--shutdown-delay", "0", "--graceful-timeout", "2",
               "--log-format", "text"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=small_fd_limit)
    try:
        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{ports['health']}/readyz", timeout=5,
                                 trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, timeout=60)
        lines_at_start = len(log.read_text().splitlines())
        flood = _flood(ports["webhook"], FLOOD) + _flood(ports["health"], FLOOD // 2)
        time.sleep(1.0)  # let the server work through its backlog
        assert process.poll() is None
        for sock in flood:
            sock.close()

        def answers() -> bool:
            try:
                with https_client(tmp_path / "certs", ports["webhook"], timeout=5) as client:
                    return client.post("/mutate", content=b"{}",
                                       headers={"content-type": "application/json"}).status_code == 400
            except httpx.HTTPError:
                return False

        eventually(answers, timeout=HANG, message="the webhook never answered again after the flood")
        assert ready()
        flood_lines = log.read_text().splitlines()[lines_at_start:]
        assert len(flood_lines) <= 10, "\n".join(flood_lines[:20])
        assert any("connection limit" in line or "cannot accept" in line for line in flood_lines), flood_lines
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "Traceback" not in log.read_text()


def test_the_connection_cap_follows_the_open_file_limit(cert_dir: Path) -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with serving(echo_routes(), cert_dir, Limits(max_connections=10 * soft + 10**6)) as (served, _port):
        assert served.server.max_connections < resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# The server of the test below: a TLS listener whose process has used up all but a few descriptors, so a
# flood makes accept() itself fail with EMFILE (the path that logged 632,831 lines in 70 s in issue 10).
EMFILE_SERVER = """
import logging, os, sys, threading
from pathlib import Path
from qosgate.serving.server import Limits
from tests.serving.wire import echo_routes, serving

logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if sys.argv[2] == "debug" else logging.INFO)
with serving(echo_routes(), Path(sys.argv[1]), Limits(max_connections=10_000)) as (server, port):
    hoard = []
    while True:  # take every descriptor left, then give a handful back for the server's own use
        try:
            hoard.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            break
    for fd in hoard[-6:]:
        os.close(fd)
    print(port, flush=True)
    sys.stdin.readline()
"""


def test_accept_failing_with_emfile_pauses_and_logs_once_then_service_resumes(
        cert_dir: Path, tmp_path: Path, loop: str) -> None:
    log = tmp_path / "server.log"
    root = Path(__file__).resolve().parents[2]

    def small_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))

    with log.open("wb") as err:
        process = subprocess.Popen([sys.executable, "-c", EMFILE_SERVER, str(cert_dir), "info"], cwd=root,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                   preexec_fn=small_fd_limit, env={**os.environ, "PYTHONPATH": str(root)})
    assert process.stdin is not None and process.stdout is not None
    try:
        port = int(process.stdout.readline())
        flood = _flood(port, FLOOD)
        time.sleep(1.5)  # several accept pauses' worth of flood
        assert process.poll() is None
        for sock in flood:
            sock.close()
        eventually(lambda: _answers(port, cert_dir), timeout=HANG, message="never answered again after the flood")
        lines = log.read_text().splitlines()
        assert any("cannot accept connections" in line for line in lines), lines[:20]
        assert len(lines) <= 10, "\n".join(lines[:20])
    finally:
        process.stdin.close()
        process.wait(timeout=60)


def _answers(port: int, cert_dir: Path) -> bool:
    try:
        return served_meanwhile(port, cert_dir)
    except (OSError, Closed):
        return False
