"""A small keep-alive HTTPS client: one connection per calling thread, TCP_NODELAY, SNI and verification
for a service name whatever address is dialled, an optional client certificate.

Used where qosgate itself calls an HTTPS peer on a hot path — an extender replica forwarding verbs to the
leader, the scheduling simulator. http.client rather than httpx: httpx spends more per request than a filter
costs. Thread-safe: each thread gets its own connection; `close()` cuts every thread's connection.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from urllib.parse import urlsplit


class PeerUnavailable(Exception):
    """No answer: connection refused or reset, timeout, TLS failure."""


class _Connection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, context: ssl.SSLContext, server_name: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self._server_name)


def client_context(ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                   insecure: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


class KeepAliveClient:
    """POSTs to `https://host:port[/prefix]`; `set_url` points it elsewhere (connections reopen lazily)."""

    def __init__(self, url: str, context: ssl.SSLContext, server_name: str | None = None,
                 timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._context = context
        self._server_name = server_name
        self._local = threading.local()
        self._generation = 0
        self._open: set[_Connection] = set()
        self._open_lock = threading.Lock()
        self.url = ""
        self.set_url(url)

    def set_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"URL must be https://host:port[/prefix], got {url!r}")
        self.url = url
        self._host, self._port = parts.hostname, parts.port or 443
        self._prefix = parts.path.rstrip("/")
        self._generation += 1

    def _connection(self) -> _Connection:
        local = self._local
        connection: _Connection | None = getattr(local, "connection", None)
        if (getattr(local, "generation", None) != self._generation or connection is None
                or connection not in self._open):  # closed by close(): reconnect
            if connection is not None:
                self._forget(connection)
            connection = _Connection(self._host, self._port, self._context, self._server_name or self._host,
                                     self.timeout)
            local.connection, local.generation = connection, self._generation
            with self._open_lock:
                self._open.add(connection)
        return connection

    def _forget(self, connection: _Connection) -> None:
        connection.close()
        with self._open_lock:
            self._open.discard(connection)

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        """(status, body); raises PeerUnavailable when no answer came."""
        connection = self._connection()
        try:
            connection.request("POST", f"{self._prefix}{path}", body, {"Content-Type": content_type})
            response = connection.getresponse()
            return response.status, response.read()
        except Exception as exc:
            # OSError / HTTPException normally; AttributeError/TypeError/ValueError when close() cut the
            # connection from another thread mid-request. All mean "no answer".
            self._forget(connection)
            self._local.connection = None
            raise PeerUnavailable(f"POST {path}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        """Close every thread's connection (a request running on one fails like a dropped connection)."""
        with self._open_lock:
            connections, self._open = self._open, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()
