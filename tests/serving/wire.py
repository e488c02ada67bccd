"""Raw HTTP/1.1 over TCP or TLS for the serving tests: exact bytes out, exact bytes back.

httpx hides what these tests are about (which bytes arrive when, who closes a connection, what a
half-sent request does), so the tests speak the protocol themselves through :class:`Wire`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qosgate.serving.http import Blocking, Request, Response, Route, Router
from qosgate.serving.server import Limits, Listener
from qosgate.serving.tls import TLS_CERT_FILE, TLS_KEY_FILE, CertReloader
from tests.support.serving import RunningServer, serve_in_thread
from tests.support.tls import WEBHOOK_HOSTNAME, client_ssl_context

HANG = 20.0  # seconds: only stops a broken build from hanging; never a claim about speed


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before this reply

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


class Closed(Exception):
    """The server closed the connection (EOF, reset, or TLS teardown) before a complete reply."""


class Wire:
    """One client connection. `tls`: a client SSLContext (handshake at construction) or None (plain TCP)."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, *, server_hostname: str = WEBHOOK_HOSTNAME,
                 handshake: bool = True, timeout: float = HANG) -> None:
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = self.raw
        self._tls, self._hostname = tls, server_hostname
        self.buffer = b""
        if tls is not None and handshake:
            self.handshake()

    def handshake(self) -> None:
        assert self._tls is not None
        self.sock = self._tls.wrap_socket(self.raw, server_hostname=self._hostname)

    @property
    def tls(self) -> ssl.SSLSocket:
        assert isinstance(self.sock, ssl.SSLSocket), "not a TLS connection (or no handshake yet)"
        return self.sock

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionError, ssl.SSLError) as exc:
            raise Closed(repr(exc)) from None
        if not chunk:
            raise Closed("EOF")
        self.buffer += chunk

    def reply(self) -> Reply:
        """The next complete response (1xx interim responses are recorded on it)."""
        interim: list[int] = []
        while True:
            while b"\r\n\r\n" not in self.buffer:
                self._fill()
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:
                interim.append(status)
                continue
            length = int(headers.get("content-length", "0"))
            while len(self.buffer) < length:
                self._fill()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
            return Reply(status, headers, body, interim)

    def interim(self) -> int:
        """Read exactly one interim (1xx) response head, e.g. ``100 Continue``."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return int(head.split()[1])

    def call(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        self.send(request(method, path, body, headers))
        return self.reply()

    def closed_by_server(self, timeout: float = HANG) -> bool:
        """Wait until the server closes the connection (any unread replies are kept in `buffer`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                self._fill()
            except Closed:
                return True
            except TimeoutError:
                return False
        return False

    def is_open(self, wait: float = 0.05) -> bool:
        """True when the connection shows no close within `wait` seconds (nothing is consumed)."""
        self.sock.settimeout(wait)
        try:
            self._fill()
        except Closed:
            return False
        except TimeoutError:
            return True
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            self.raw.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    fields = {"host": "qosgate.test", **({"content-type": "application/json"} if body else {}), **(headers or {})}
    if body and "transfer-encoding" not in fields:
        fields.setdefault("content-length", str(len(body)))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode("latin-1") + body


def tls_context(cert_dir: str | os.PathLike[str], *, client_cert: bool = False) -> ssl.SSLContext:
    return client_ssl_context(cert_dir, client_cert)


def reloader(cert_dir: Path, **kwargs: object) -> CertReloader:
    return CertReloader(cert_dir / TLS_CERT_FILE, cert_dir / TLS_KEY_FILE, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def serving(routes: list[Route], cert_dir: Path | None = None, limits: Limits | None = None,
            **tls: object) -> Iterator[tuple[RunningServer, int]]:
    """One listener on a free port (HTTPS with `cert_dir`); yields the running server and the port."""
    source = reloader(cert_dir, **tls) if cert_dir is not None else None
    with serve_in_thread([Listener("test", Router(routes), 0, "127.0.0.1", source)], limits) as served:
        yield served, served.ports["test"]




class Gate:
    """Holds `/slow` requests in worker threads until released; counts the ones waiting."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.waiting = 0

    def wait(self) -> bool:
        with self._lock:
            self.waiting += 1
        try:
            return self.release.wait(HANG * 3)
        finally:
            with self._lock:
                self.waiting -= 1


def echo_routes(gate: Gate | None = None, *, max_body: int = 1024) -> list[Route]:
    """GET /ping, POST /echo (JSON only, `max_body`), GET /slow (held by `gate`), GET /whoami (client cert)."""
    gate = gate or Gate()
    held = gate

    def ping(_request: Request) -> Response:
        return Response.text("pong")

    def echo(request: Request) -> Response:
        return Response(200, request.body)

    def slow(_request: Request) -> Blocking:
        return Blocking(lambda: Response.json({"released": held.wait()}))

    def whoami(request: Request) -> Response:
        certificate = request.client_certificate or {}
        subject = dict(pair for rdn in certificate.get("subject", ()) for pair in rdn)
        return Response.json({"cn": subject.get("commonName")})

    return [Route("GET", "/ping", ping, content_types=None),
            Route("POST", "/echo", echo, max_body=max_body),
            Route("GET", "/slow", slow, content_types=None),
            Route("GET", "/whoami", whoami, content_types=None, client_certificate_required=True)]
