"""A small keep-alive HTTPS client speaking the extender wire, like kube-scheduler's (with its client
certificate)."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson


class ExtenderUnavailable(Exception):
    """No usable answer: connection refused/reset, timeout, TLS failure, or a non-200 status."""


class _Connection(http.client.HTTPSConnection):
    """HTTPS to an address, verifying (and sending SNI for) the Service name, as the scheduler's client does."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, server_name: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)  # type: ignore[attr-defined]


class ExtenderClient:
    """Minimal keep-alive HTTPS client, one connection per thread (the bind pool calls concurrently).

    http.client rather than httpx: the simulator measures the extender, and httpx spends more per request
    than a filter costs. `timeout` defaults to kube-scheduler's extender httpTimeout (5 s).
    """

    def __init__(self, url: str, ca_file: str | None = None, server_name: str | None = None,
                 timeout: float = 5.0, insecure: bool = False, cert_file: str | None = None,
                 key_file: str | None = None) -> None:
        self.timeout = timeout
        if insecure:
            self._context = ssl.create_default_context()
            self._context.check_hostname = False
            self._context.verify_mode = ssl.CERT_NONE
        else:
            self._context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            # What kube-scheduler presents with tlsConfig.certFile/keyFile: the extender's verbs require it.
            self._context.load_cert_chain(cert_file, key_file)
        self._server_name = server_name
        self._local = threading.local()
        self._generation = 0
        self._open: set[_Connection] = set()  # every thread's connection, so close_all can reach them
        self._open_lock = threading.Lock()
        self.set_url(url)

    def set_url(self, url: str) -> None:
        """Point at another address (an extender restarted elsewhere); connections reopen lazily."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"extender URL must be https://host:port[/prefix], got {url!r}")
        self._host, self._port = parts.hostname, parts.port or 443
        self._prefix = parts.path.rstrip("/")
        self._generation += 1

    def _connection(self) -> _Connection:
        local = self._local
        connection = getattr(local, "connection", None)
        if (getattr(local, "generation", None) != self._generation or connection is None
                or connection not in self._open):  # closed by close(): reconnect
            if getattr(local, "connection", None) is not None:
                self._forget(local.connection)
            local.connection = _Connection(self._host, self._port, self._context,
                                           self._server_name or self._host, self.timeout)
            local.generation = self._generation
            with self._open_lock:
                self._open.add(local.connection)
        return local.connection  # type: ignore[no-any-return]

    def _forget(self, connection: _Connection) -> None:
        connection.close()
        with self._open_lock:
            self._open.discard(connection)

    def call(self, verb: str, payload: Mapping[str, Any] | bytes) -> Any:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        connection = self._connection()
        try:
            connection.request("POST", f"{self._prefix}/{verb}", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except Exception as exc:
            # OSError / HTTPException normally; AttributeError/TypeError/ValueError when close() cut the
            # connection from another thread mid-request. All mean "no answer".
            self._forget(connection)
            self._local.connection = None
            raise ExtenderUnavailable(f"{verb}: {type(exc).__name__}: {exc}") from None
        if response.status != 200:
            raise ExtenderUnavailable(f"{verb}: HTTP {response.status}: {data[:300]!r}")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ExtenderUnavailable(f"{verb}: answer is not JSON: {exc}") from None

    def close(self) -> None:
        """Close every thread's connection (a request running on one fails like a dropped connection).

        Idle keep-alive TLS connections would otherwise hold a stopping server in its graceful shutdown
        until it gives up, as the server waits for the client's close_notify.
        """
        with self._open_lock:
            connections, self._open = self._open, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()
