"""HTTP/1.1 as qosgate.serving.server speaks it: routing, limits, media types, pipelining, malformed input."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from qosgate.serving.http import Request, Response, Route
from qosgate.serving.metrics import HTTP_CONNECTIONS, HTTP_REQUESTS
from tests.serving.wire import Gate, Wire, echo_routes, request, serving

LIMIT = 1024


@pytest.fixture
def gate() -> Iterator[Gate]:
    held = Gate()
    yield held
    held.release.set()


@pytest.fixture
def port(gate: Gate) -> Iterator[int]:
    def boom(_request: Request) -> Response:
        raise RuntimeError("handler bug")

    routes = [*echo_routes(gate, max_body=LIMIT), Route("GET", "/boom", boom, content_types=None)]
    with serving(routes) as (_server, bound):
        yield bound


def test_one_keep_alive_connection_answers_many_requests(port: int) -> None:
    with Wire(port) as wire:
        for i in range(20):
            reply = wire.call("POST", "/echo", b'{"n": %d}' % i)
            assert (reply.status, reply.body, reply.closes) == (200, b'{"n": %d}' % i, False)


def test_every_accepted_connection_has_tcp_nodelay() -> None:
    # The body must never wait behind the headers for the client's delayed ACK (issue 10: ~44 ms per call).
    with serving(echo_routes()) as (served, bound), Wire(bound) as wire:
        assert wire.call("GET", "/ping").status == 200
        [connection] = served.server.connections
        assert connection.transport is not None
        sock = connection.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_unknown_path_is_404_and_the_connection_stays_usable(port: int) -> None:
    with Wire(port) as wire:
        reply = wire.call("GET", "/nope")
        assert reply.status == 404 and b"no such path" in reply.body and not reply.closes
        assert wire.call("GET", "/ping").body == b"pong"


def test_wrong_method_is_405_with_an_allow_header(port: int) -> None:
    with Wire(port) as wire:
        reply = wire.call("DELETE", "/echo")
        assert reply.status == 405 and reply.headers["allow"] == "POST"
        assert wire.call("GET", "/ping").status == 200


def test_a_failing_handler_is_a_500_and_the_connection_survives(port: int) -> None:
    with Wire(port) as wire:
        reply = wire.call("GET", "/boom")
        assert reply.status == 500 and b"internal error" in reply.body
        assert wire.call("GET", "/ping").status == 200


@pytest.mark.parametrize("garbage", [b"HELLO\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                                     b"GET /ping HTTP/1.1\r\nbad header\r\n\r\n",
                                     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"])
def test_malformed_http_is_a_400_and_the_connection_closes(port: int, garbage: bytes) -> None:
    with Wire(port) as wire:
        wire.send(garbage)
        reply = wire.reply()
        assert reply.status == 400 and reply.closes
        assert wire.closed_by_server()


def test_protocol_upgrade_is_refused(port: int) -> None:
    with Wire(port) as wire:
        reply = wire.call("GET", "/ping", headers={"connection": "Upgrade", "upgrade": "websocket"})
        assert reply.status == 400 and reply.closes


def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_slowest(port: int, gate: Gate) -> None:
    with Wire(port) as wire:
        wire.send(request("GET", "/slow") + request("POST", "/echo", b'"second"') + request("GET", "/nope")
                  + request("GET", "/ping"))
        assert wire.is_open(0.3) and wire.buffer == b""  # nothing may overtake the slow first answer
        gate.release.set()
        replies = [wire.reply() for _ in range(4)]
    assert [r.status for r in replies] == [200, 200, 404, 200]
    assert [r.body for r in replies[:2]] == [b'{"released":true}', b'"second"'] and replies[3].body == b"pong"


def test_declared_body_over_the_limit_is_413_before_any_body_is_sent(port: int) -> None:
    with Wire(port) as wire:
        wire.send(request("POST", "/echo", headers={"content-type": "application/json",
                                                    "content-length": str(100 * LIMIT)}))
        reply = wire.reply()  # the server answers without waiting for the 100 KiB it was promised
        assert reply.status == 413 and reply.closes
        assert wire.closed_by_server()


def test_chunked_body_is_cut_off_once_it_passes_the_limit(port: int) -> None:
    chunk = b"x" * 400
    with Wire(port) as wire:
        wire.send(request("POST", "/echo", headers={"content-type": "application/json",
                                                    "transfer-encoding": "chunked"}))
        sent = 0
        while sent < 400 * LIMIT and wire.is_open(0.01) and not wire.buffer:  # 400 KiB offered, 1 KiB allowed
            wire.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        assert sent <= 4 * LIMIT
        reply = wire.reply()
        assert reply.status == 413 and reply.closes
        assert wire.closed_by_server()


def test_chunked_body_within_the_limit_is_accepted(port: int) -> None:
    with Wire(port) as wire:
        wire.send(request("POST", "/echo", headers={"content-type": "application/json",
                                                    "transfer-encoding": "chunked"})
                  + b"3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n")
        assert wire.reply().body == b"[1,2]"


def test_expect_100_continue_is_answered_before_the_body_is_sent(port: int) -> None:
    with Wire(port) as wire:
        wire.send(request("POST", "/echo", headers={"content-type": "application/json", "content-length": "4",
                                                    "expect": "100-continue"}))
        assert wire.interim() == 100
        wire.send(b"true")
        reply = wire.reply()
        assert (reply.status, reply.body) == (200, b"true")


def test_expect_100_continue_with_a_body_over_the_limit_gets_413_and_no_continue(port: int) -> None:
    with Wire(port) as wire:
        wire.send(request("POST", "/echo", headers={"content-type": "application/json",
                                                    "content-length": str(10 * LIMIT), "expect": "100-continue"}))
        reply = wire.reply()
        assert reply.status == 413 and reply.interim == []


def test_expect_100_continue_never_overtakes_an_earlier_pipelined_answer(port: int, gate: Gate) -> None:
    with Wire(port) as wire:
        wire.send(request("GET", "/slow") + request("POST", "/echo", headers={
            "content-type": "application/json", "content-length": "2", "expect": "100-continue"}))
        assert wire.is_open(0.3) and wire.buffer == b""
        gate.release.set()
        first = wire.reply()
        assert first.body == b'{"released":true}' and first.interim == []
        wire.send(b"{}")
        assert wire.reply().body == b"{}"


@pytest.mark.parametrize("content_type", ["application/json", "APPLICATION/JSON; charset=utf-8",
                                          "Application/Json;charset=UTF-8", " application/json "])
def test_json_media_type_is_matched_case_insensitively_without_parameters(port: int, content_type: str) -> None:
    with Wire(port) as wire:
        assert wire.call("POST", "/echo", b"{}", {"content-type": content_type}).status == 200


@pytest.mark.parametrize("content_type", ["application/jsonx", "application/json-patch+json", "text/json",
                                          "application/x-www-form-urlencoded", "json"])
def test_other_media_types_are_415(port: int, content_type: str) -> None:
    with Wire(port) as wire:
        reply = wire.call("POST", "/echo", b"{}", {"content-type": content_type})
        assert reply.status == 415 and b"content type must be application/json" in reply.body
        assert reply.closes  # refused before reading the body: the rest of the stream is unknown


def test_headers_over_the_limit_are_431(port: int) -> None:
    with Wire(port) as wire:
        wire.send(request("GET", "/ping", headers={f"x-filler-{i}": "y" * 1000 for i in range(40)}))
        reply = wire.reply()
        assert reply.status == 431 and reply.closes


def test_http_1_0_request_is_answered_and_then_closed(port: int) -> None:
    with Wire(port) as wire:
        wire.send(b"GET /ping HTTP/1.0\r\n\r\n")
        reply = wire.reply()
        assert reply.body == b"pong" and reply.closes
        assert wire.closed_by_server()


def test_connection_close_from_the_client_is_honoured(port: int) -> None:
    with Wire(port) as wire:
        reply = wire.call("GET", "/ping", headers={"connection": "close"})
        assert reply.status == 200 and reply.closes
        assert wire.closed_by_server()


def test_requests_are_counted_by_listener_route_and_status(port: int) -> None:
    before = HTTP_REQUESTS.labels("test", "/ping", "200")._value.get()
    with Wire(port) as wire:
        for _ in range(3):
            wire.call("GET", "/ping")
    assert HTTP_REQUESTS.labels("test", "/ping", "200")._value.get() == before + 3


def test_connections_are_counted_once_each_however_many_requests_they_carry(port: int) -> None:
    # The rate of new connections is what tells an operator a client is paying a handshake per call.
    before = HTTP_CONNECTIONS.labels("test")._value.get()
    for _ in range(2):
        with Wire(port) as wire:
            for _ in range(3):
                assert wire.call("GET", "/ping").status == 200
    assert HTTP_CONNECTIONS.labels("test")._value.get() == before + 2
