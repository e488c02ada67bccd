"""HTTP/2 on a connection whose client chose it through ALPN (architecture §3.2).

Why: kube-scheduler's extender client is a Go ``http.Transport`` that keeps at most two idle HTTP/1.1
connections per host, so whenever a filter and a few binds are in flight at once it opens a new connection and
closes it afterwards: a TLS handshake with client-certificate verification for a large share of its calls,
the largest single cost of the extender on the real scheduler. Offered ``h2``, the same client multiplexes
every call over one connection. Listeners opt in (``CertReloader(alpn=H2_ALPN)``); the others stay HTTP/1.1.

The rules of the HTTP/1.1 server carry over: the same router, pre-checks (client certificate, media type,
declared size), body limits enforced while reading, handlers on the loop or offloaded exactly as there, the
per-listener request counter. Deadlines: the connection is closed when no stream is open for the keep-alive
timeout (the first-request timeout before the first stream); a stream whose request is not complete within
the body timeout is reset; a response the client does not read (no WINDOW_UPDATE) for the body timeout
closes the connection. Bounds: at most ``MAX_STREAMS`` concurrent streams, headers up to the server's
header limit (both announced in SETTINGS and enforced by the protocol library), and a client that resets
streams faster than ``RESET_BUDGET`` per ``RESET_WINDOW`` seconds (the "rapid reset" attack) gets a GOAWAY.
Drain: GOAWAY at once, streams in flight finish, then the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

from qosgate.serving.http import (
    RECEIVING_FULL,
    Blocking,
    Request,
    Response,
    Route,
    Router,
    internal_error,
    invoke,
    too_large,
)

if TYPE_CHECKING:  # the connection that owns the session (no import cycle at run time)
    from qosgate.serving.server import _Connection

log = logging.getLogger("qosgate.serving")

H2_ALPN = ("h2", "http/1.1")
MAX_STREAMS = 128
RESET_BUDGET = 200
RESET_WINDOW = 10.0
# Headers that mean something only to HTTP/1.1 and are malformed in an HTTP/2 response (RFC 9113 §8.2.2).
_CONNECTION_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})


@dataclass(slots=True)
class _Stream:
    route: Route | Response
    path: str
    query: str
    headers: dict[str, str]
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None
    answered: bool = False


class H2Session:
    """The HTTP/2 side of one ``_Connection``: frames in, routed requests, responses out."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.limits = connection.server.limits
        self.router: Router = connection.router
        self.loop = connection.loop
        config = h2.config.H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True,
                                           validate_outbound_headers=False, normalize_outbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_bytes,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })
        self.streams: dict[int, _Stream] = {}
        self.pending: dict[int, memoryview] = {}  # response bytes waiting for flow-control window
        self.resets: deque[float] = deque()
        # Request bytes held for incomplete streams, at most what one HTTP/1.1 connection could hold (the largest
        # body a route takes): 128 streams each sending a large body must not multiply it.
        self.buffered = 0
        self.budget = self.router.max_body
        self.closing = False
        self.h2.initiate_connection()
        self._flush()
        self._arm_idle(self.limits.first_request_timeout)

    # --- bytes in ---------------------------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # Malformed frames, too many streams, oversized headers: the library queued a GOAWAY naming the
            # error; send it and close.
            log.debug("HTTP/2 protocol error from client: %s", exc)
            self._flush()
            self._close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._begin(event.stream_id, event.headers or [])
            elif isinstance(event, h2.events.DataReceived):
                self._data(event.stream_id, event.data or b"", event.flow_controlled_length or 0)
            elif isinstance(event, h2.events.StreamEnded):
                self._complete(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._reset_by_client(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                for stream_id in list(self.pending):
                    self._send_pending(stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closing = True
        self._flush()
        if self.closing and not self.streams and not self.pending:
            self._close()

    def _begin(self, stream_id: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        if self.closing:  # opened after our GOAWAY crossed it: the client retries it elsewhere
            with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self._disarm_idle()
        pseudo: dict[str, str] = {}
        headers: dict[str, str] = {}
        for raw_name, raw_value in raw_headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            if name.startswith(":"):
                pseudo[name] = value
            else:
                previous = headers.get(name)
                headers[name] = value if previous is None else f"{previous}, {value}"
        method = pseudo.get(":method", "")
        path, _, query = pseudo.get(":path", "").partition("?")
        matched = self.router.match(method, path)
        stream = _Stream(matched, path, query, headers)
        self.streams[stream_id] = stream
        stream.timer = self.loop.call_later(self.limits.body_timeout, self._overdue, stream_id)
        if isinstance(matched, Response):
            return  # answered when the request is complete (or at once if the body is too large to wait for)
        declared = headers.get("content-length")
        length = int(declared) if declared is not None and declared.isdigit() else None
        refused = Router.precheck(matched, headers, length, self.connection.client_certificate)
        if refused is not None:
            self._answer_early(stream_id, refused, matched.label)

    def _data(self, stream_id: int, data: bytes, flow_controlled: int) -> None:
        # Always hand the window back: the connection window is shared by every stream.
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.h2.acknowledge_received_data(flow_controlled, stream_id)
        stream = self.streams.get(stream_id)
        if stream is None or stream.answered:
            return
        stream.size += len(data)
        route = stream.route
        limit = route.max_body if isinstance(route, Route) else 64 * 1024
        label = route.label if isinstance(route, Route) else ""
        if stream.size > limit:
            refusal = too_large(route) if isinstance(route, Route) else Response.error(
                413, f"request body larger than {limit} bytes")
            self._answer_early(stream_id, refusal, label)
            return
        if self.buffered + len(data) > self.budget:
            self._answer_early(stream_id, Response.error(503, "too much request data in flight on this "
                                                              "connection; retry the request"), label)
            return
        if not self.connection.server.take_receiving(len(data)):  # the process-wide budget, shared with 1.1
            self._answer_early(stream_id, RECEIVING_FULL, label)
            return
        stream.chunks.append(data)
        self.buffered += len(data)

    def _complete(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if stream.answered:  # refused before the body ended: the response is out, nothing is left to do
            self._forget(stream_id)
            return
        route = stream.route
        if isinstance(route, Response):
            self._respond(stream_id, route, "")
            return
        body = stream.chunks[0] if len(stream.chunks) == 1 else b"".join(stream.chunks)
        self._release(stream)
        request = Request(route.method, stream.path, body, stream.headers, stream.query,
                          self.connection.client_certificate)
        stream.answered = True
        if route.is_async or route.offloaded(len(body)):
            self._later(stream_id, route, invoke(route, request, self.connection.server.run_blocking))
            return
        try:
            result = route.handler(request)
        except Exception:
            result = internal_error(route)
        if isinstance(result, Blocking):
            self._later(stream_id, route, self._blocking(route, result))
            return
        self._respond(stream_id, result, route.label)  # type: ignore[arg-type]

    async def _blocking(self, route: Route, blocking: Blocking) -> Response:
        try:
            return await self.connection.server.run_blocking(blocking.work)
        except asyncio.CancelledError:
            raise
        except Exception:
            return internal_error(route)

    def _later(self, stream_id: int, route: Route, work: Any) -> None:
        async def answer() -> None:
            try:
                response = await work
            except asyncio.CancelledError:
                response = Response.error(503, "server shutting down")
            self._respond(stream_id, response, route.label)
            self._flush()
            if self.closing and not self.streams and not self.pending:
                self._close()

        task = asyncio.ensure_future(answer())
        tasks = self.connection.server.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # --- bytes out --------------------------------------------------------------------------------------------
    def _answer_early(self, stream_id: int, response: Response, label: str) -> None:
        """Answer before the request body is complete, then stop the client sending the rest (RFC 9113 §8.1)."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.answered = True
        self._respond(stream_id, response, label, keep_stream=True)
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.NO_ERROR)
        self._forget(stream_id)

    def _respond(self, stream_id: int, response: Response, label: str, keep_stream: bool = False) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # reset by the client meanwhile: nobody to answer
        headers: list[tuple[str, str]] = [(":status", str(response.status)),
                                          ("content-type", response.content_type),
                                          ("content-length", str(len(response.body)))]
        headers += [(name.lower(), value) for name, value in response.headers
                    if name.lower() not in _CONNECTION_HEADERS]
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not response.body)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._forget(stream_id)
            return
        self.connection.state.count(label or "unrouted", response.status)
        if response.body:
            self.pending[stream_id] = memoryview(response.body)
            self._send_pending(stream_id)
        if not keep_stream and stream_id not in self.pending:
            self._forget(stream_id)

    def _send_pending(self, stream_id: int) -> None:
        data = self.pending.get(stream_id)
        if data is None:
            return
        try:
            while data:
                window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
                if window <= 0:
                    self.pending[stream_id] = data
                    # Resumed by the client's WINDOW_UPDATE; a client that never reads must not hold the
                    # response (and the connection) forever.
                    self.connection._arm(self.limits.body_timeout, self._stalled)
                    return
                chunk, data = data[:window], data[window:]
                self.h2.send_data(stream_id, chunk.tobytes(), end_stream=not data)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self.pending.pop(stream_id, None)
        stream = self.streams.get(stream_id)
        if stream is not None and stream.answered:
            self._forget(stream_id)

    def _flush(self) -> None:
        transport = self.connection.transport
        data = self.h2.data_to_send()
        if data and transport is not None and not self.connection.lost:
            transport.write(data)

    # --- stream and connection lifetime -------------------------------------------------------------------------
    def _release(self, stream: _Stream) -> None:
        held = sum(len(chunk) for chunk in stream.chunks)
        self.buffered -= held
        if held:
            self.connection.server.give_back_receiving(held)
        stream.chunks = []

    def _forget(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._release(stream)
            if stream.timer is not None:
                stream.timer.cancel()
        self.pending.pop(stream_id, None)
        if not self.streams:
            if self.closing:
                self.loop.call_soon(self._close_if_done)
            else:
                self.connection.idle_since = time.monotonic()  # the connection cap closes the longest idle
                self._arm_idle(self.limits.keepalive_timeout)

    def _reset_by_client(self, stream_id: int) -> None:
        self._forget(stream_id)
        now = time.monotonic()
        self.resets.append(now)
        while self.resets and now - self.resets[0] > RESET_WINDOW:
            self.resets.popleft()
        if len(self.resets) > RESET_BUDGET:
            log.warning("HTTP/2 client reset more than %d streams in %.0f s: closing the connection",
                        RESET_BUDGET, RESET_WINDOW)
            self.h2.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self._flush()
            self._close()

    def _stalled(self) -> None:
        self.connection.timer = None
        if self.pending and not self.connection.lost:
            log.debug("HTTP/2 client stopped reading responses (no WINDOW_UPDATE): closing the connection")
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection(error_code=h2.errors.ErrorCodes.FLOW_CONTROL_ERROR)
            self._flush()
            self._close()

    def _overdue(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.answered:
            return
        stream.timer = None
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
        self._forget(stream_id)
        self._flush()

    def _arm_idle(self, seconds: float) -> None:
        self.connection._arm(seconds, self._idle_expired)  # the connection's one timer: unused by HTTP/1.1 here

    def _disarm_idle(self) -> None:
        self.connection._disarm()

    def _idle_expired(self) -> None:
        self.connection.timer = None
        if not self.streams and not self.connection.lost:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
            self._flush()
            self._close()

    @property
    def idle(self) -> bool:
        return not self.streams and not self.pending

    def drain(self) -> None:
        """Server shutdown: GOAWAY now (the client sends new calls elsewhere), finish the open streams."""
        if self.closing:
            return
        self.closing = True
        # A GOAWAY written past the state machine: h2's close_connection() would also stop the streams in
        # flight from being answered (its connection state becomes CLOSED).
        goaway = hyperframe.frame.GoAwayFrame(stream_id=0, last_stream_id=self.h2.highest_inbound_stream_id,
                                              error_code=h2.errors.ErrorCodes.NO_ERROR)
        self._flush()
        transport = self.connection.transport
        if transport is not None and not self.connection.lost:
            transport.write(goaway.serialize())
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.closing and not self.streams and not self.pending:
            self._close()

    def _close(self) -> None:
        self._disarm_idle()
        for stream in self.streams.values():
            if stream.timer is not None:
                stream.timer.cancel()
        self.streams.clear()
        self.pending.clear()
        connection = self.connection
        if not connection.lost and connection.transport is not None:
            connection.lost = True
            connection.transport.close()

    def lost(self) -> None:
        """The transport is gone: stop every timer, give back the bytes of bodies that will never complete."""
        self._disarm_idle()
        for stream in self.streams.values():
            if stream.timer is not None:
                stream.timer.cancel()
            self._release(stream)

