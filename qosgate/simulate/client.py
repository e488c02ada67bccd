"""A small keep-alive HTTPS client speaking the extender wire, like kube-scheduler's (with its client
certificate)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from qosgate.serving.client import KeepAliveClient, PeerUnavailable, client_context


class ExtenderUnavailable(Exception):
    """No usable answer: connection refused/reset, timeout, TLS failure, or a non-200 status."""


class ExtenderClient:
    """The extender wire over a keep-alive HTTPS client (qosgate.serving.client), one connection per thread
    (the simulator's bind pool calls concurrently). `timeout` defaults to kube-scheduler's extender
    httpTimeout (5 s)."""

    def __init__(self, url: str, ca_file: str | None = None, server_name: str | None = None,
                 timeout: float = 5.0, insecure: bool = False, cert_file: str | None = None,
                 key_file: str | None = None) -> None:
        # What kube-scheduler presents with tlsConfig.certFile/keyFile: the extender's verbs require it.
        context = client_context(ca_file, cert_file, key_file, insecure)
        self._client = KeepAliveClient(url, context, server_name, timeout)
        self.timeout = timeout

    def set_url(self, url: str) -> None:
        """Point at another address (an extender restarted elsewhere); connections reopen lazily."""
        self._client.set_url(url)

    def call(self, verb: str, payload: Mapping[str, Any] | bytes) -> Any:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        try:
            status, data = self._client.post(f"/{verb}", body)
        except PeerUnavailable as exc:
            raise ExtenderUnavailable(f"{verb}: {exc}") from None
        if status != 200:
            raise ExtenderUnavailable(f"{verb}: HTTP {status}: {data[:300]!r}")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ExtenderUnavailable(f"{verb}: answer is not JSON: {exc}") from None

    def close(self) -> None:
        """Close every thread's connection; idle keep-alive TLS connections would otherwise hold a stopping
        server in its graceful shutdown until it gives up."""
        self._client.close()
