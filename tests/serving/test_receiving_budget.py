"""Request bytes still arriving are bounded for the whole process, not only per request: slow senders on many
connections (2048 × the webhook's 4 MiB) must not hold gigabytes. Beyond `Limits.max_receiving_bytes` a body
is refused with a retryable 503, and the bytes come back as bodies complete or their connections drop —
over HTTP/1.1 and HTTP/2 alike."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from qosgate.serving.http2 import H2_ALPN
from qosgate.serving.server import Limits
from tests.serving.wire import Wire, echo_routes, request, serving, tls_context
from tests.support.tls import WEBHOOK_HOSTNAME, eventually

KIB = 1024
BUDGET = 256 * KIB
LIMITS = Limits(max_receiving_bytes=BUDGET)


@pytest.fixture
def served(cert_dir: Path) -> Iterator[tuple[object, int]]:
    with serving(echo_routes(max_body=BUDGET), cert_dir, LIMITS) as running:
        yield running


def partial_body(wire: Wire, size: int, sent: int) -> None:
    """Announce a `size`-byte JSON body and send only `sent` bytes of it."""
    body = b'"' + b"x" * (size - 2) + b'"'
    head = request("POST", "/echo", body)[: -len(body)]
    wire.send(head + body[:sent])


def receiving(running: object) -> int:
    return int(running.server.receiving)  # type: ignore[attr-defined]


def test_a_body_beyond_the_process_budget_is_a_retryable_503(served: tuple[object, int], cert_dir: Path) -> None:
    running, port = served
    with Wire(port, tls_context(cert_dir)) as slow, Wire(port, tls_context(cert_dir)) as other:
        partial_body(slow, 200 * KIB, 180 * KIB)  # a slow sender holds 180 KiB of the 256
        eventually(lambda: receiving(running) == 180 * KIB, timeout=5)
        refused = other.call("POST", "/echo", b'"' + b"y" * (100 * KIB) + b'"')
        assert refused.status == 503 and refused.headers["retry-after"] == "1"
        assert b"retry the request" in refused.body
        assert refused.closes  # its remaining bytes were never read
        assert receiving(running) == 180 * KIB  # the refused body holds nothing


def test_bytes_come_back_when_the_body_completes(served: tuple[object, int], cert_dir: Path) -> None:
    running, port = served
    body = b'"' + b"x" * (200 * KIB - 2) + b'"'
    with Wire(port, tls_context(cert_dir)) as slow:
        slow.send(request("POST", "/echo", body)[: -len(body)] + body[: 180 * KIB])
        eventually(lambda: receiving(running) == 180 * KIB, timeout=5)
        slow.send(body[180 * KIB:])
        assert slow.reply().body == body
    assert receiving(running) == 0
    with Wire(port, tls_context(cert_dir)) as other:
        assert other.call("POST", "/echo", b'"' + b"y" * (200 * KIB) + b'"').status == 200


def test_bytes_come_back_when_the_sender_goes_away(served: tuple[object, int], cert_dir: Path) -> None:
    running, port = served
    with Wire(port, tls_context(cert_dir)) as slow:
        partial_body(slow, 200 * KIB, 180 * KIB)
        eventually(lambda: receiving(running) == 180 * KIB, timeout=5)
    eventually(lambda: receiving(running) == 0, timeout=5)
    with Wire(port, tls_context(cert_dir)) as other:
        assert other.call("POST", "/echo", b'"' + b"y" * (200 * KIB) + b'"').status == 200


def test_http2_streams_count_in_the_same_budget(cert_dir: Path) -> None:
    with serving(echo_routes(max_body=BUDGET), cert_dir, LIMITS, alpn=H2_ALPN) as (running, port):
        h2_stream_holds_bytes_an_http1_caller_then_misses(running, port, cert_dir)


def h2_stream_holds_bytes_an_http1_caller_then_misses(running: object, port: int, cert_dir: Path) -> None:
    context = tls_context(cert_dir)
    context.set_alpn_protocols(list(H2_ALPN))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname=WEBHOOK_HOSTNAME)
    assert tls.selected_alpn_protocol() == "h2"
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    connection.increment_flow_control_window(2**30)
    tls.sendall(connection.data_to_send())
    try:
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, [(":method", "POST"), (":path", "/echo"), (":scheme", "https"),
                                         (":authority", WEBHOOK_HOSTNAME), ("content-type", "application/json"),
                                         ("content-length", str(200 * KIB))])
        sent = 0
        deadline = time.monotonic() + 10
        while sent < 180 * KIB and time.monotonic() < deadline:  # as far as flow control lets it go
            window = min(connection.local_flow_control_window(stream), connection.max_outbound_frame_size,
                         180 * KIB - sent)
            if window <= 0:
                for event in connection.receive_data(tls.recv(65536)):
                    assert not isinstance(event, h2.events.StreamReset)
                tls.sendall(connection.data_to_send())
                continue
            connection.send_data(stream, b"x" * window)
            sent += window
            tls.sendall(connection.data_to_send())
        eventually(lambda: receiving(running) == 180 * KIB, timeout=5)
        with Wire(port, tls_context(cert_dir)) as other:  # an HTTP/1.1 caller meets the HTTP/2 stream's bytes
            assert other.call("POST", "/echo", b'"' + b"y" * (100 * KIB) + b'"').status == 503
    finally:
        tls.close()
    eventually(lambda: receiving(running) == 0, timeout=5)


def test_the_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_receiving_bytes"):
        Limits(max_receiving_bytes=0)


def test_the_default_budget_fits_two_of_the_largest_bodies() -> None:
    from qosgate.extender.app import MAX_ARGS_BYTES

    assert Limits().max_receiving_bytes >= 2 * MAX_ARGS_BYTES
