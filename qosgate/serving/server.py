"""Listeners, connections and the drain protocol: HTTP/1.1 on asyncio with httptools (architecture §3.2);
a connection whose client chose HTTP/2 through ALPN is handed to ``qosgate.serving.http2``.

One server serves every listener of a process (webhook HTTPS, extender HTTPS, plain health/metrics) from
one event loop — uvloop when installed. It is small on purpose; each rule below is something a caller
(kube-apiserver, kube-scheduler, a kubelet probe) or a hostile client taught us:

- **TCP_NODELAY on every accepted socket**, and a response leaves in one write. Without it the body of a
  response waits behind its headers for the client's delayed ACK: ~40 ms per call.
- **Every phase of a connection has a deadline**: the TLS handshake, the first request after it, a
  request's headers, its body, and the idle time between keep-alive requests. The keep-alive deadline
  (default 120 s) is longer than Go's client-side idle timeout (90 s), so the client closes first and never
  sends a request into a connection we are closing.
- **A connection cap** (also bounded by the open-file limit): at the cap, the connection idle the longest
  is closed to make room; if none is idle, the new connection is closed at once — before its TLS handshake
  costs anything. Running out of file descriptors pauses accepting briefly and is logged once per interval,
  never once per attempt.
- **Body limits are enforced while reading**: a declared Content-Length over the route's limit is refused
  (413) before a byte of body is read; a chunked body is cut off the moment it passes the limit.
- **Drain**: stop accepting, close idle connections, let requests in flight finish (their responses say
  ``Connection: close``), abort what is left at the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import resource
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httptools

from qosgate.serving.http import (
    DEFAULT_MAX_BODY,
    RECEIVING_FULL,
    Blocking,
    Request,
    Response,
    Route,
    Router,
    internal_error,
    invoke,
    reason_phrase,
    too_large,
)
from qosgate.serving.http2 import H2Session
from qosgate.serving.metrics import HTTP_CONNECTIONS, HTTP_CONNECTIONS_REFUSED, HTTP_REQUESTS, STATE, Sample

log = logging.getLogger("qosgate.serving")

_ACCEPT_BATCH = 64
_ACCEPT_PAUSE = 0.5
_LOG_INTERVAL = 10.0
_FD_RESERVE = 64  # descriptors kept for everything that is not a client connection (API, files, logs)
_MAX_PIPELINED = 8


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one client can hold. Defaults suit kube-apiserver and kube-scheduler as callers."""

    max_connections: int = 2048
    handshake_timeout: float = 10.0
    first_request_timeout: float = 10.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0  # a 100 MiB Nodes list over a slow link still arrives in time
    keepalive_timeout: float = 120.0
    tls_shutdown_timeout: float = 2.0
    max_header_bytes: int = 32 * 1024
    worker_threads: int = 64  # blocking work is mostly waiting (API round trips, group-commit lanes)
    max_offloaded: int = 512  # requests queued for or running in the worker pool
    # Bytes of request bodies still arriving, over every connection of the process: per-request limits times
    # max_connections (2048 × 4 MiB on the webhook) would let slow senders hold gigabytes. Two of the largest
    # bodies any route takes (the extender's 128 MiB Nodes form) fit; beyond, a retryable 503.
    max_receiving_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("handshake_timeout", "first_request_timeout", "header_timeout", "body_timeout",
                     "keepalive_timeout", "tls_shutdown_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_connections < 1 or self.worker_threads < 1 or self.max_offloaded < 1:
            raise ValueError("max_connections, worker_threads and max_offloaded must be at least 1")
        if self.max_receiving_bytes < 1:
            raise ValueError("max_receiving_bytes must be at least 1")


class TLSSource(Protocol):
    """Provides the listening SSLContext and keeps it current (qosgate.serving.tls.CertReloader)."""

    @property
    def context(self) -> ssl.SSLContext: ...

    async def run(self) -> None: ...


@dataclass(slots=True)
class Listener:
    name: str
    router: Router
    port: int
    host: str = "127.0.0.1"
    tls: TLSSource | None = None


class _Stop(Exception):
    """Raised inside a parser callback to stop reading: a response was chosen without the rest."""


class _ListenerState:
    __slots__ = ("accept_paused", "accepted", "closed", "listener", "port", "requests", "sock", "suppressed")

    def __init__(self, listener: Listener, sock: socket.socket) -> None:
        self.listener = listener
        self.sock = sock
        self.port: int = sock.getsockname()[1]  # kept: the socket is closed (getsockname fails) once draining
        self.accept_paused = False
        self.closed = False
        self.suppressed = 0
        self.requests: dict[tuple[str, int], Any] = {}
        self.accepted = HTTP_CONNECTIONS.labels(listener.name)

    def count(self, route: str, status: int) -> None:
        child = self.requests.get((route, status))
        if child is None:
            child = self.requests[(route, status)] = HTTP_REQUESTS.labels(self.listener.name, route, str(status))
        child.inc()


class _Connection(asyncio.Protocol):
    """One client connection: parse, route, answer in order, enforce the deadlines."""

    def __init__(self, server: Server, state: _ListenerState) -> None:
        self.server = server
        self.state = state
        self.router = state.listener.router
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.made = False
        self.lost = False
        self.closing = False
        self.client_certificate: dict[str, Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.idle_since = time.monotonic()
        self.in_message = False
        self.overdue = False  # the deadline of the request being received passed while an earlier one ran
        self.busy = False
        self.paused = False
        self.queue: deque[tuple[Route | Response, Request | None, bool]] = deque()
        self.h2: H2Session | None = None  # set when the client chose HTTP/2 through ALPN
        self.receiving = 0  # body bytes of the request being received, counted in the server's budget
        self._reset_message()

    def _reset_message(self) -> None:
        self._give_back_receiving()
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.limit = DEFAULT_MAX_BODY
        self.route: Route | Response | None = None
        self.rejected: Response | None = None

    # --- transport events ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self.state.accepted.inc()
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.client_certificate = ssl_object.getpeercert() or None
            if ssl_object.selected_alpn_protocol() == "h2":  # offered only by listeners that opted in
                self.h2 = H2Session(self)
        if self.h2 is None:
            self._arm(self.server.limits.first_request_timeout)
        if self.server.draining:  # the handshake finished after shutdown began: close it like any idle one
            self.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._disarm()
        self._give_back_receiving()
        if self.h2 is not None:
            self.h2.lost()
        self.server.forget(self)

    def pause_writing(self) -> None:
        self._pause()

    def resume_writing(self) -> None:
        self._resume()

    def data_received(self, data: bytes) -> None:
        if self.h2 is not None:
            self.h2.receive(data)
            return
        if self.closing and not self.in_message and not self.busy and not self.queue:
            return  # draining: an idle connection takes no new request
        # No deadline is (re)armed here: bytes that start no request (stray CRLFs) must not keep an idle
        # connection open, and a request's header deadline runs from its first byte (on_message_begin).
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(Response.error(400, "protocol upgrades are not supported"))
            return
        except httptools.HttpParserCallbackError:
            if self.rejected is None:
                self._refuse(Response.error(400, "malformed HTTP request"))
                return
            self._refuse(self.rejected)
            return
        except httptools.HttpParserError as exc:
            self._refuse(Response.error(400, f"malformed HTTP request: {str(exc)[:200]}"))
            return
        self._process()

    # --- parser callbacks (httptools) ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_message = True
        self.overdue = False
        self._reset_message()
        # Also for a request pipelined behind others: on_message_complete disarmed the previous deadline.
        self._arm(self.server.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def _count_header_bytes(self, size: int) -> None:
        self.header_bytes += size
        if self.header_bytes > self.server.limits.max_header_bytes:
            self.rejected = Response.error(431, f"request headers larger than "
                                                f"{self.server.limits.max_header_bytes} bytes")
            raise _Stop

    def on_headers_complete(self) -> None:
        self._arm(self.server.limits.body_timeout)
        method = self.parser.get_method().decode("latin-1")
        path, _, _query = self.url.decode("latin-1").partition("?")
        matched = self.router.match(method, path)
        self.route = matched
        if isinstance(matched, Response):
            return  # answered once the (small, bounded) body is read, so the connection stays usable
        self.limit = matched.max_body
        declared = self.headers.get("content-length")
        length = int(declared) if declared is not None and declared.isdigit() else None
        refused = Router.precheck(matched, self.headers, length, self.client_certificate)
        if refused is not None:
            self.rejected = refused
            raise _Stop
        if (self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None
                and not self.busy and not self.queue):
            # Not while an earlier pipelined request is unanswered: the 100 would overtake its response
            # (the client then sends the body after its own short wait).
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self.body_size += len(chunk)
        if self.body_size > self.limit:
            route = self.route
            self.rejected = too_large(route) if isinstance(route, Route) else Response.error(
                413, f"request body larger than {self.limit} bytes")
            raise _Stop
        if not self.server.take_receiving(len(chunk)):
            self.rejected = RECEIVING_FULL
            raise _Stop
        self.receiving += len(chunk)
        self.body.append(chunk)

    def _give_back_receiving(self) -> None:
        if self.receiving:
            self.server.give_back_receiving(self.receiving)
            self.receiving = 0

    def on_message_complete(self) -> None:
        self.in_message = False
        self._disarm()
        route = self.route
        keep_alive = self.parser.should_keep_alive()
        if route is None:  # cannot happen with httptools; be safe rather than crash
            route = Response.error(400, "malformed HTTP request")
        if isinstance(route, Response):
            self.queue.append((route, None, keep_alive))
        else:
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            path, _, query = self.url.decode("latin-1").partition("?")
            request = Request(route.method, path, body, self.headers, query, self.client_certificate)
            self.queue.append((route, request, keep_alive))
        self._reset_message()
        if len(self.queue) > _MAX_PIPELINED:
            self._pause()

    # --- answering ----------------------------------------------------------------------------------------
    def _process(self) -> None:
        while self.queue and not self.busy and not self.lost:
            route, request, keep_alive = self.queue.popleft()
            if request is None or isinstance(route, Response):
                self._write(route if isinstance(route, Response) else Response.error(400, "bad request"),
                            keep_alive, "")
                continue
            if route.is_async or route.offloaded(len(request.body)):
                self.busy = True
                task = asyncio.ensure_future(self._answer_later(route, request, keep_alive))
                self.server.tasks.add(task)
                task.add_done_callback(self.server.tasks.discard)
                return
            try:
                result = route.handler(request)
            except Exception:
                result = internal_error(route)
            if isinstance(result, Blocking):
                self.busy = True
                task = asyncio.ensure_future(self._finish_later(route, result, keep_alive))
                self.server.tasks.add(task)
                task.add_done_callback(self.server.tasks.discard)
                return
            self._write(result, keep_alive, route.label)  # type: ignore[arg-type]
        if not self.queue and self.paused and not self.lost:
            self._resume()

    async def _answer_later(self, route: Route, request: Request, keep_alive: bool) -> None:
        try:
            response = await invoke(route, request, self.server.run_blocking)
        except asyncio.CancelledError:
            response = Response.error(503, "server shutting down")
        self.busy = False
        if not self.lost:
            self._write(response, keep_alive, route.label)
            self._process()

    async def _finish_later(self, route: Route, blocking: Blocking, keep_alive: bool) -> None:
        try:
            response = await self.server.run_blocking(blocking.work)
        except asyncio.CancelledError:
            response = Response.error(503, "server shutting down")
        except Exception:
            response = internal_error(route)
        self.busy = False
        if not self.lost:
            self._write(response, keep_alive, route.label)
            self._process()

    def _write(self, response: Response, keep_alive: bool, label: str) -> None:
        transport = self.transport
        if transport is None or self.lost:
            return
        close = self.closing or not keep_alive
        head = [f"HTTP/1.1 {response.status} {reason_phrase(response.status)}\r\n"
                f"content-type: {response.content_type}\r\ncontent-length: {len(response.body)}\r\n"]
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n")
        head.append("connection: close\r\n\r\n" if close else "\r\n")
        # One write: headers and body in the same segment(s), nothing for Nagle to hold back.
        transport.write("".join(head).encode("latin-1") + response.body)
        self.state.count(label or "unrouted", response.status)
        if close:
            self.lost = True  # nothing more is answered on this connection
            transport.close()
        elif self.in_message:
            if self.overdue:  # the next request ran out of time while this one was being answered
                self._refuse(Response.error(408, "request not received in time"))
        elif not self.queue:
            self.idle_since = time.monotonic()
            self._arm(self.server.limits.keepalive_timeout)

    def _refuse(self, response: Response) -> None:
        """Answer a request we will not read to its end, then close: its remaining bytes are unknown."""
        self.in_message = False
        self._disarm()
        self._give_back_receiving()  # now, not when the transport has finished closing
        self.body = []
        self.queue.clear()
        if not self.busy:
            self._write(response, False, self.route.label if isinstance(self.route, Route) else "")
        else:
            self.abort()

    # --- deadlines and flow control -----------------------------------------------------------------------
    def _arm(self, seconds: float, expired: Callable[[], None] | None = None) -> None:
        """One deadline at a time per connection; `expired` replaces the HTTP/1.1 handling (HTTP/2's idle)."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(seconds, expired or self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.lost:
            return
        if self.busy:
            # A pipelined request's deadline passed while an earlier one is being answered: refuse it
            # once that answer is out (_write), instead of letting it hang without any deadline.
            self.overdue = self.in_message
            return
        if self.in_message:
            self._refuse(Response.error(408, "request not received in time"))
        else:
            self.abort()  # idle: say nothing (RFC 9112 §9.5 allows closing an idle connection at any time)

    def _pause(self) -> None:
        if not self.paused and self.transport is not None and not self.lost:
            self.paused = True
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.pause_reading()

    def _resume(self) -> None:
        if self.paused and self.transport is not None and not self.lost:
            self.paused = False
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.resume_reading()

    @property
    def idle(self) -> bool:
        if self.h2 is not None:
            return self.h2.idle
        return not self.in_message and not self.busy and not self.queue

    def drain(self) -> None:
        """Server shutdown: finish what is in flight, take nothing new."""
        self.closing = True
        if self.h2 is not None:
            self.h2.drain()
            return
        if self.idle and self.transport is not None:
            self.lost = True
            self.transport.close()

    def abort(self) -> None:
        self.lost = True
        self._disarm()
        if self.transport is not None:
            self.transport.abort()


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    """Bind before serving: port 0 gets its real port at once, and a bind error surfaces here as OSError."""
    if host in ("::", "") and socket.has_dualstack_ipv6():
        sock = socket.create_server((host, port), family=socket.AF_INET6, backlog=backlog, dualstack_ipv6=True)
    else:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.create_server(address[:2], family=family, backlog=backlog)
    sock.setblocking(False)
    return sock


def _raise_fd_limit() -> int:
    """Lift the soft open-file limit to the hard one; returns the soft limit in force."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard and (hard == resource.RLIM_INFINITY or hard > soft):
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return 1024


class Server:
    """Serves listeners until :meth:`shutdown`. Create, :meth:`bind` (optional), then ``await start()``."""

    def __init__(self, listeners: Sequence[Listener], limits: Limits | None = None, backlog: int = 1024) -> None:
        if not listeners:
            raise ValueError("a server needs at least one listener")
        names = [listener.name for listener in listeners]
        if len(set(names)) != len(names):
            raise ValueError(f"listener names must be unique: {names}")
        self.listeners = list(listeners)
        self.limits = limits or Limits()
        self.backlog = backlog
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Future[Any]] = set()
        self.open = 0  # accepted sockets not yet closed, handshakes included
        self.max_connections = self.limits.max_connections
        self._states: list[_ListenerState] = []
        self._reloaders: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._offloaded = 0
        self._stopped: asyncio.Event | None = None
        self._empty: asyncio.Event | None = None
        self._refused_logged = 0.0
        self.receiving = 0  # body bytes still arriving, over every connection (Limits.max_receiving_bytes)
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.started = False
        self.draining = False

    # --- the process-wide budget of request bytes still arriving (event loop thread only) ------------------
    def take_receiving(self, size: int) -> bool:
        if self.receiving + size > self.limits.max_receiving_bytes:
            return False
        self.receiving += size
        return True

    def give_back_receiving(self, size: int) -> None:
        self.receiving -= size

    # --- set-up -----------------------------------------------------------------------------------------
    def bind(self) -> dict[str, int]:
        """Open the listening sockets (idempotent); returns {listener name: bound port}."""
        if not self._states:
            try:
                for listener in self.listeners:
                    self._states.append(_ListenerState(listener, _bind(listener.host, listener.port,
                                                                       self.backlog)))
            except OSError:
                for state in self._states:
                    state.sock.close()
                self._states.clear()
                raise
        return self.ports

    @property
    def ports(self) -> dict[str, int]:
        return {state.listener.name: state.port for state in self._states}

    async def start(self) -> None:
        self.bind()
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._empty = asyncio.Event()
        fds = _raise_fd_limit()
        if fds - _FD_RESERVE < self.max_connections:
            self.max_connections = max(fds - _FD_RESERVE, 16)
            log.warning("open-file limit %d caps connections at %d", fds, self.max_connections)
        self._executor = ThreadPoolExecutor(self.limits.worker_threads, thread_name_prefix="qosgate-worker")
        reloaders = {id(s.listener.tls): s.listener.tls for s in self._states if s.listener.tls is not None}
        self._reloaders = [asyncio.ensure_future(tls.run()) for tls in reloaders.values()]
        for state in self._states:
            self.loop.add_reader(state.sock.fileno(), self._accept, state)
            scheme = "https" if state.listener.tls is not None else "http"
            host, port = state.sock.getsockname()[:2]
            log.info("serving %s on %s://%s:%d", state.listener.name, scheme, host, port)
        STATE.register(f"http-connections-{id(self)}", self._samples)
        self.started = True

    def _samples(self) -> Iterable[Sample]:
        yield ("qosgate_http_open_connections", "Client connections open (handshakes included).", {},
               float(self.open))
        yield ("qosgate_http_offloaded_requests", "Requests queued for or running in the worker pool.", {},
               float(self._offloaded))

    # --- accepting --------------------------------------------------------------------------------------
    def _accept(self, state: _ListenerState) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _address = state.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(state, exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                self._log_refusal(state, f"accept failed: {exc}")
                return
            if self.open >= self.max_connections and not self._evict_idle():
                HTTP_CONNECTIONS_REFUSED.labels(state.listener.name, "connection limit").inc()
                self._log_refusal(state, f"connection limit {self.max_connections} reached: refusing")
                conn.close()
                continue
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setblocking(False)
            self.open += 1
            self._empty.clear()  # type: ignore[union-attr]
            protocol = _Connection(self, state)
            tls = state.listener.tls
            if tls is None:
                made = self.loop.connect_accepted_socket(functools.partial(_same, protocol), conn)
            else:
                made = self.loop.connect_accepted_socket(
                    functools.partial(_same, protocol), conn, ssl=tls.context,
                    ssl_handshake_timeout=self.limits.handshake_timeout,
                    ssl_shutdown_timeout=self.limits.tls_shutdown_timeout)
            task = asyncio.ensure_future(made)
            self.tasks.add(task)
            task.add_done_callback(functools.partial(self._connected, protocol=protocol, conn=conn, state=state))

    def _connected(self, task: asyncio.Future[Any], protocol: _Connection, conn: socket.socket,
                   state: _ListenerState) -> None:
        self.tasks.discard(task)
        failed = task.cancelled() or task.exception() is not None
        if failed and not protocol.made:  # the handshake failed or timed out: connection_lost never comes
            # The loop owns the socket since connect_accepted_socket and closes it itself (uvloop does so
            # asynchronously): closing it here as well could close a descriptor already reused by a newer
            # connection.
            self._closed_one()
            if not task.cancelled():
                log.debug("%s: TLS handshake failed: %s", state.listener.name, task.exception())

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        self._closed_one()

    def _closed_one(self) -> None:
        self.open = max(self.open - 1, 0)
        if self.open == 0 and self._empty is not None:
            self._empty.set()
        # A descriptor is (about to be) free: a listener paused by EMFILE accepts again on the next loop
        # turn rather than after the whole pause, or a backlog of dead flood connections drains a handful
        # per pause and live clients wait behind it for minutes.
        for state in self._states:
            if state.accept_paused:
                self._resume_accepting(state)

    def _evict_idle(self) -> bool:
        """At the cap, close the keep-alive connection idle the longest; False when none is idle."""
        idle = [c for c in self.connections if c.idle and not c.lost]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since)
        victim.abort()
        return True

    def _pause_accepting(self, state: _ListenerState, exc: OSError) -> None:
        """Out of descriptors: stop accepting for a moment instead of spinning (and logging) on accept()."""
        if state.accept_paused or state.closed:
            return
        state.accept_paused = True
        self.loop.remove_reader(state.sock.fileno())
        self._evict_idle()
        self._log_refusal(state, f"cannot accept connections ({exc.strerror}): pausing {_ACCEPT_PAUSE}s")
        self.loop.call_later(_ACCEPT_PAUSE, self._resume_accepting, state)

    def _resume_accepting(self, state: _ListenerState) -> None:
        if not state.accept_paused:
            return  # already resumed by a closing connection; this is the pause's own timer
        state.accept_paused = False
        if not state.closed:
            self.loop.add_reader(state.sock.fileno(), self._accept, state)

    def _log_refusal(self, state: _ListenerState, message: str) -> None:
        """At most one line per interval, with the count of what was not logged."""
        now = time.monotonic()
        if now - self._refused_logged < _LOG_INTERVAL:
            state.suppressed += 1
            return
        self._refused_logged = now
        extra = f" ({state.suppressed} similar events not logged)" if state.suppressed else ""
        state.suppressed = 0
        log.warning("%s: %s%s", state.listener.name, message, extra)

    # --- the worker pool --------------------------------------------------------------------------------
    async def run_blocking(self, work: Callable[[], Response]) -> Response:
        if self._offloaded >= self.limits.max_offloaded:
            return Response.error(503, "server busy: too many requests in progress; retry")
        self._offloaded += 1
        try:
            return await self.loop.run_in_executor(self._executor, work)
        finally:
            self._offloaded -= 1

    # --- shutdown ---------------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        for state in self._states:
            if not state.closed:
                state.closed = True
                if self.started:
                    with contextlib.suppress(Exception):
                        self.loop.remove_reader(state.sock.fileno())
                state.sock.close()

    async def shutdown(self, timeout: float = 20.0) -> None:
        """Stop accepting, close idle connections, wait for requests in flight, then abort the rest."""
        self.draining = True
        self.stop_accepting()
        for connection in list(self.connections):
            connection.drain()
        if self.open and self._empty is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), timeout)
        for connection in list(self.connections):
            connection.abort()
        for task in list(self.tasks):
            task.cancel()
        for reloader in self._reloaders:
            reloader.cancel()
        await asyncio.gather(*self._reloaders, *self.tasks, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        STATE.unregister(f"http-connections-{id(self)}")
        if self._stopped is not None:
            self._stopped.set()

    @property
    def stopped(self) -> bool:
        """True once shutdown() has finished."""
        return self._stopped is not None and self._stopped.is_set()

    async def wait_stopped(self) -> None:
        assert self._stopped is not None, "start() first"
        await self._stopped.wait()


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when installed (a C event loop: about twice the throughput), else asyncio's default.

    QOSGATE_EVENT_LOOP=asyncio forces asyncio's own loop (diagnosing a suspected event-loop problem).
    """
    if os.environ.get("QOSGATE_EVENT_LOOP") == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _same(protocol: _Connection) -> _Connection:
    """The protocol factory for an accepted socket: the connection object already built for it."""
    return protocol


def run_in_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main())
