"""HTTP/2 on listeners that opt in (the extender's): what kube-scheduler's Go client gets when it offers h2.

httpx speaks the client side (it uses the same `h2` state machine as a reference client would; the frames on
the wire are checked by the server's own library, not by this test). Raw frames come from h2 directly where
the test is about what a misbehaving client sends.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import hyperframe.frame
import pytest

from qosgate.serving.http import Request, Response, Route
from qosgate.serving.http2 import H2_ALPN, RESET_BUDGET
from qosgate.serving.metrics import HTTP_CONNECTIONS, HTTP_REQUESTS
from qosgate.serving.server import Limits
from tests.serving.test_server_tls import client_ca, with_client_cert  # noqa: F401  (fixture)
from tests.serving.wire import HANG, Gate, echo_routes, serving, tls_context
from tests.support.tls import WEBHOOK_HOSTNAME

LIMIT = 1024
BIG = 300_000  # above the default 64 KiB stream window: the response must follow the client's WINDOW_UPDATEs


def routes(gate: Gate) -> list[Route]:
    def big(_request: Request) -> Response:
        return Response(200, b"x" * BIG, "application/octet-stream")

    return [*echo_routes(gate, max_body=LIMIT), Route("GET", "/big", big, content_types=None)]


@pytest.fixture
def gate() -> Iterator[Gate]:
    held = Gate()
    yield held
    held.release.set()


def client(cert_dir: Path, context: ssl.SSLContext | None = None) -> httpx.Client:
    return httpx.Client(http2=True, verify=context or tls_context(cert_dir), timeout=HANG, trust_env=False)


def url(port: int, path: str) -> str:
    return f"https://{WEBHOOK_HOSTNAME}:{port}{path}"


@pytest.fixture
def resolve_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The certificate names the service; the server listens on loopback."""
    real = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        return real("127.0.0.1" if host == WEBHOOK_HOSTNAME else host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


pytestmark = pytest.mark.usefixtures("resolve_to_loopback")


def test_a_listener_that_opts_in_speaks_h2_and_multiplexes_calls_on_one_connection(
        cert_dir: Path, gate: Gate) -> None:
    # Raw frames, not httpx from several threads: httpx's sync HTTP/2 connection is not safe to share.
    with serving(routes(gate), cert_dir, alpn=H2_ALPN) as (_served, port):
        before = HTTP_CONNECTIONS.labels("test")._value.get()
        raw = RawH2(port, cert_dir)
        streams = [1 + 2 * i for i in range(40)]
        for n, stream_id in enumerate(streams):  # every request out before any answer is read
            raw.h2.send_headers(stream_id, [(":method", "POST"), (":path", "/echo"), (":scheme", "https"),
                                            (":authority", WEBHOOK_HOSTNAME), ("content-type", "application/json")])
            raw.send_body(stream_id, b'{"n": %d}' % n, end_stream=True)
        bodies: dict[int, bytes] = {}
        while len(bodies) < len(streams):
            for event in raw.events(h2.events.StreamEnded):
                if isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
        assert [bodies[stream_id] for stream_id in streams] == [b'{"n": %d}' % n for n in range(40)]
        assert HTTP_CONNECTIONS.labels("test")._value.get() == before + 1
        raw.close()
        with client(cert_dir) as h2client:  # and a stock client negotiates it
            assert h2client.get(url(port, "/ping")).http_version == "HTTP/2"


def test_a_listener_that_did_not_opt_in_stays_on_http_1_1(cert_dir: Path, gate: Gate) -> None:
    with serving(routes(gate), cert_dir) as (_served, port), client(cert_dir) as h2client:
        assert h2client.get(url(port, "/ping")).http_version == "HTTP/1.1"


def test_a_held_call_does_not_hold_the_other_streams(cert_dir: Path, gate: Gate) -> None:
    with serving(routes(gate), cert_dir, alpn=H2_ALPN) as (_served, port):
        raw = RawH2(port, cert_dir)
        raw.request(1, "GET", "/slow")
        deadline = time.monotonic() + HANG
        while gate.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gate.waiting == 1
        raw.request(3, "GET", "/ping")
        first = [e for e in raw.events(h2.events.StreamEnded) if isinstance(e, h2.events.DataReceived)]
        assert [(e.stream_id, e.data) for e in first] == [(3, b"pong")]  # answered while /slow waits
        gate.release.set()
        second = [e for e in raw.events(h2.events.StreamEnded) if isinstance(e, h2.events.DataReceived)]
        assert [(e.stream_id, e.data) for e in second] == [(1, b'{"released":true}')]
        raw.close()


def test_a_response_larger_than_the_window_arrives_whole(cert_dir: Path, gate: Gate) -> None:
    with serving(routes(gate), cert_dir, alpn=H2_ALPN) as (_served, port), client(cert_dir) as h2client:
        replies = [h2client.get(url(port, "/big")) for _ in range(3)]
        assert all(r.status_code == 200 and r.content == b"x" * BIG for r in replies)


def test_body_limits_media_types_and_unknown_paths_answer_as_over_http_1_1(cert_dir: Path, gate: Gate) -> None:
    with serving(routes(gate), cert_dir, alpn=H2_ALPN) as (_served, port), client(cert_dir) as h2client:
        json = {"content-type": "application/json"}
        declared = h2client.post(url(port, "/echo"), content=b"x" * (LIMIT + 1), headers=json)
        assert declared.status_code == 413 and "larger than" in declared.json()["message"]

        def stream() -> Iterator[bytes]:  # no content-length: the limit is enforced while reading
            for _ in range(LIMIT // 100 + 2):
                yield b"x" * 100

        streamed = h2client.post(url(port, "/echo"), content=stream(), headers=json)
        assert streamed.status_code == 413
        assert h2client.post(url(port, "/echo"), content=b"{}", headers={"content-type": "text/plain"}
                             ).status_code == 415
        assert h2client.get(url(port, "/nope")).status_code == 404
        assert h2client.delete(url(port, "/echo")).status_code == 405
        assert h2client.post(url(port, "/echo"), content=b'{"ok": 1}', headers=json).content == b'{"ok": 1}'


def test_client_certificate_routes_need_a_certificate_over_h2_too(cert_dir: Path, client_ca: Path,  # noqa: F811
                                                                   gate: Gate) -> None:
    with serving(routes(gate), cert_dir, alpn=H2_ALPN, client_ca_file=client_ca / "ca.crt") as (_served, port):
        with client(cert_dir) as anonymous:
            refused = anonymous.get(url(port, "/whoami"))
            assert refused.http_version == "HTTP/2" and refused.status_code == 401
        with client(cert_dir, with_client_cert(cert_dir, client_ca)) as scheduler:
            assert scheduler.get(url(port, "/whoami")).json() == {"cn": "qosgate-scheduler"}


def test_requests_over_h2_are_counted_like_the_others(cert_dir: Path, gate: Gate) -> None:
    with serving(routes(gate), cert_dir, alpn=H2_ALPN) as (_served, port), client(cert_dir) as h2client:
        before = HTTP_REQUESTS.labels("test", "/ping", "200")._value.get()
        for _ in range(3):
            h2client.get(url(port, "/ping"))
        assert HTTP_REQUESTS.labels("test", "/ping", "200")._value.get() == before + 3


class RawH2:
    """A hand-driven HTTP/2 client connection (for what well-behaved clients never send)."""

    def __init__(self, port: int, cert_dir: Path) -> None:
        context = tls_context(cert_dir)
        context.set_alpn_protocols(["h2"])
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=HANG),
                                        server_hostname=WEBHOOK_HOSTNAME)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.flush()
        self.unparsed = b""

    def flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())

    def request(self, stream_id: int, method: str, path: str) -> None:
        self.h2.send_headers(stream_id, [(":method", method), (":path", path), (":scheme", "https"),
                                         (":authority", WEBHOOK_HOSTNAME)], end_stream=True)
        self.flush()

    def events(self, until: type, timeout: float = HANG) -> list[object]:
        """Read until an event of type `until` arrives (or the server closes)."""
        seen: list[object] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                seen.append("closed")
                return seen
            batch = self.h2.receive_data(data)
            seen.extend(batch)
            self.flush()
            if any(isinstance(event, until) for event in batch):
                return seen  # the whole batch: events after `until` in it are not lost
        raise TimeoutError(f"no {until.__name__} within {timeout} s; saw {seen}")

    def next_frame(self, kind: type, timeout: float = HANG) -> Any:
        """The next frame of `kind` read straight off the socket, without the client state machine."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(self.unparsed) >= 9:
                frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(self.unparsed[:9]))
                if len(self.unparsed) < 9 + length:
                    break
                frame.parse_body(memoryview(self.unparsed[9:9 + length]))
                self.unparsed = self.unparsed[9 + length:]
                if isinstance(frame, kind):
                    return frame
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a {kind.__name__}")
            self.unparsed += chunk
        raise TimeoutError(f"no {kind.__name__} within {timeout} s")

    def send_body(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """DATA frames of at most the default frame size (16 KiB)."""
        for start in range(0, len(data), 16_384):
            chunk = data[start:start + 16_384]
            self.h2.send_data(stream_id, chunk, end_stream=end_stream and start + 16_384 >= len(data))
        self.flush()

    def close(self) -> None:
        self.sock.close()


def test_garbage_after_the_preface_closes_that_connection_only(cert_dir: Path, gate: Gate) -> None:
    with serving(routes(gate), cert_dir, alpn=H2_ALPN) as (_served, port):
        raw = RawH2(port, cert_dir)
        raw.sock.sendall(b"\x00\x00\x04\x77\x00\x00\x00\x00\x00garbage-that-is-no-frame" * 4)
        seen = raw.events(h2.events.ConnectionTerminated)
        assert isinstance(seen[-1], h2.events.ConnectionTerminated) or seen[-1] == "closed"
        raw.close()
        with client(cert_dir) as h2client:
            assert h2client.get(url(port, "/ping")).text == "pong"


def test_a_client_resetting_streams_without_end_gets_goaway(cert_dir: Path, gate: Gate) -> None:
    with serving(routes(gate), cert_dir, alpn=H2_ALPN) as (_served, port):
        raw = RawH2(port, cert_dir)
        headers = [(":method", "GET"), (":path", "/ping"), (":scheme", "https"), (":authority", WEBHOOK_HOSTNAME)]
        terminated = None
        for index in range(RESET_BUDGET + 50):
            stream_id = 1 + 2 * index
            try:
                raw.h2.send_headers(stream_id, headers, end_stream=True)
                raw.h2.reset_stream(stream_id)
                raw.flush()
            except (OSError, h2.exceptions.ProtocolError):
                break
        try:
            seen = raw.events(h2.events.ConnectionTerminated)
            terminated = seen[-1]
        except (OSError, h2.exceptions.ProtocolError):
            terminated = "closed"
        assert terminated == "closed" or (isinstance(terminated, h2.events.ConnectionTerminated)
                                          and terminated.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        raw.close()


def test_an_idle_h2_connection_is_closed_after_the_keep_alive_timeout(cert_dir: Path, gate: Gate) -> None:
    limits = Limits(keepalive_timeout=0.3, first_request_timeout=0.3)
    with serving(routes(gate), cert_dir, limits=limits, alpn=H2_ALPN) as (_served, port):
        raw = RawH2(port, cert_dir)
        seen = raw.events(h2.events.ConnectionTerminated)
        assert isinstance(seen[-1], h2.events.ConnectionTerminated) or seen[-1] == "closed"
        raw.close()


def test_a_stream_whose_body_never_completes_is_reset_at_the_body_deadline(cert_dir: Path, gate: Gate) -> None:
    limits = Limits(body_timeout=0.3)
    with serving(routes(gate), cert_dir, limits=limits, alpn=H2_ALPN) as (_served, port):
        raw = RawH2(port, cert_dir)
        raw.h2.send_headers(1, [(":method", "POST"), (":path", "/echo"), (":scheme", "https"),
                                (":authority", WEBHOOK_HOSTNAME), ("content-type", "application/json")])
        raw.h2.send_data(1, b'{"half":')
        raw.flush()
        seen = raw.events(h2.events.StreamReset)
        assert isinstance(seen[-1], h2.events.StreamReset) and seen[-1].stream_id == 1
        raw.close()


def test_drain_sends_goaway_at_once_and_finishes_the_call_in_flight(cert_dir: Path, gate: Gate) -> None:
    with serving(routes(gate), cert_dir, alpn=H2_ALPN) as (served, port), ThreadPoolExecutor(1) as pool:
        raw = RawH2(port, cert_dir)
        raw.request(1, "GET", "/slow")
        deadline = time.monotonic() + HANG
        while gate.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        stopping = pool.submit(served.call, served.server.shutdown(60), 120)
        # Frames are read raw from here: the h2 client library takes any GOAWAY as final, Go's does not.
        goaway = raw.next_frame(hyperframe.frame.GoAwayFrame)
        assert goaway.error_code == 0 and goaway.last_stream_id == 1  # new calls go elsewhere from now on
        assert not stopping.done()  # the drain waits for the call in flight
        gate.release.set()
        data = raw.next_frame(hyperframe.frame.DataFrame)
        assert data.stream_id == 1 and data.data == b'{"released":true}' and "END_STREAM" in data.flags
        stopping.result(HANG)
        raw.close()


def test_request_bytes_held_per_connection_stay_within_one_largest_body(cert_dir: Path, gate: Gate) -> None:
    # Each body is within its route's limit; together they pass what one HTTP/1.1 connection could hold.
    def upload(request: Request) -> Response:
        return Response.json({"size": len(request.body)})

    largest = 64 * 1024  # the default limit of the GET routes is the router's largest
    upload_routes = [*routes(gate), Route("POST", "/upload", upload, max_body=50_000, content_types=None)]
    with serving(upload_routes, cert_dir, alpn=H2_ALPN) as (_served, port):
        raw = RawH2(port, cert_dir)
        post = [(":method", "POST"), (":path", "/upload"), (":scheme", "https"), (":authority", WEBHOOK_HOSTNAME)]
        raw.h2.send_headers(1, post)
        raw.send_body(1, b"a" * 40_000)
        raw.events(h2.events.WindowUpdated)  # the server hands the connection window back as it reads
        raw.h2.send_headers(3, post)
        raw.send_body(3, b"b" * (largest - 40_000 + 1))
        seen = raw.events(h2.events.StreamEnded)
        statuses = {e.stream_id: dict(e.headers)[b":status"] for e in seen if isinstance(e, h2.events.ResponseReceived)}
        assert statuses == {3: b"503"}
        raw.send_body(1, b"a" * 5_000, end_stream=True)
        seen = raw.events(h2.events.StreamEnded)
        assert [e.data for e in seen if isinstance(e, h2.events.DataReceived)] == [b'{"size":45000}']
        raw.close()


def test_a_client_that_stops_reading_responses_is_disconnected_at_the_body_deadline(cert_dir: Path,
                                                                                   gate: Gate) -> None:
    limits = Limits(body_timeout=0.3)
    with serving(routes(gate), cert_dir, limits=limits, alpn=H2_ALPN) as (_served, port):
        raw = RawH2(port, cert_dir)
        raw.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        raw.flush()
        raw.events(h2.events.SettingsAcknowledged)
        raw.request(1, "GET", "/big")  # 300 kB through a 1 kB window, and no WINDOW_UPDATE ever
        received = 0
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:  # read without acknowledging anything
            chunk = raw.sock.recv(65536)
            if not chunk:
                break
            received += len(chunk)
        assert time.monotonic() < deadline, "the server kept the stalled connection open"
        assert received < BIG
        raw.close()
