"""TLS test helpers shared by every suite.

Clients built here dial ``127.0.0.1`` but verify the server exactly as kube-apiserver does: against
the generated CA only, for the *service DNS name* (``qosgate-webhook.qosgate-system.svc``), with
SNI set to that name. httpx/httpcore take the name to send and verify from the ``sni_hostname``
request extension, which a small transport wrapper sets on every request.

Fixtures (imported by tests/conftest.py):
    cert_dir        session-scoped directory with ca.crt/ca.key/tls.crt/tls.key — treat as read-only
    fresh_cert_dir  per-test directory with its own CA, for tests that rotate or damage files
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from qosgate.certs.generate import CA_CERT_FILE, ensure_client_certificate, generate_certificates

__all__ = [
    "WEBHOOK_HOSTNAME",
    "WEBHOOK_NAMESPACE",
    "WEBHOOK_SERVICE",
    "async_https_client",
    "cert_dir",
    "client_ssl_context",
    "eventually",
    "fresh_cert_dir",
    "https_client",
    "make_cert_dir",
    "peer_certificate",
]

WEBHOOK_SERVICE = "qosgate-webhook"
WEBHOOK_NAMESPACE = "qosgate-system"
WEBHOOK_HOSTNAME = f"{WEBHOOK_SERVICE}.{WEBHOOK_NAMESPACE}.svc"


def make_cert_dir(directory: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Fresh CA + serving cert for the webhook service in ``directory``; kwargs go to the generator."""
    return generate_certificates(directory, WEBHOOK_SERVICE, WEBHOOK_NAMESPACE, **kwargs).directory


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One certificate set for the whole session (key generation is cheap, but not free)."""
    return make_cert_dir(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def fresh_cert_dir(tmp_path: Path) -> Path:
    """A private certificate set for a test that rewrites or breaks the files."""
    return make_cert_dir(tmp_path / "certs")


def client_ssl_context(cert_dir: str | os.PathLike[str], client_cert: bool = False) -> ssl.SSLContext:
    """Trust only the generated CA (never the system store) and check the host name, like Go's client.

    `client_cert`: present the cert dir's client pair (issued on first use), as kube-scheduler does.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.fspath(Path(cert_dir) / CA_CERT_FILE))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert:
        cert, key = ensure_client_certificate(cert_dir)
        ctx.load_cert_chain(cert, key)
    return ctx


class _SNITransport(httpx.HTTPTransport):
    """Sends SNI and verifies the certificate for ``server_hostname`` whatever address is dialled."""

    def __init__(self, server_hostname: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._server_hostname = server_hostname

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions["sni_hostname"] = self._server_hostname
        return super().handle_request(request)


class _AsyncSNITransport(httpx.AsyncHTTPTransport):
    def __init__(self, server_hostname: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._server_hostname = server_hostname

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions["sni_hostname"] = self._server_hostname
        return await super().handle_async_request(request)


def https_client(
    cert_dir: str | os.PathLike[str],
    port: int,
    server_hostname: str = WEBHOOK_HOSTNAME,
    *,
    host: str = "127.0.0.1",
    client_cert: bool = False,
    **kwargs: Any,
) -> httpx.Client:
    """httpx.Client for ``https://host:port`` that verifies the CA and ``server_hostname``.

    A certificate without that name fails with ``httpx.ConnectError`` (CERTIFICATE_VERIFY_FAILED).
    kwargs go to ``httpx.Client`` (e.g. ``timeout``). Use it as a context manager.
    """
    transport = _SNITransport(server_hostname, verify=client_ssl_context(cert_dir, client_cert))
    # trust_env=False: an HTTPS_PROXY in the environment must never reroute loopback test traffic.
    return httpx.Client(base_url=f"https://{host}:{port}", transport=transport, trust_env=False, **kwargs)


def async_https_client(
    cert_dir: str | os.PathLike[str],
    port: int,
    server_hostname: str = WEBHOOK_HOSTNAME,
    *,
    host: str = "127.0.0.1",
    **kwargs: Any,
) -> httpx.AsyncClient:
    """Async twin of :func:`https_client`."""
    transport = _AsyncSNITransport(server_hostname, verify=client_ssl_context(cert_dir))
    return httpx.AsyncClient(base_url=f"https://{host}:{port}", transport=transport, trust_env=False, **kwargs)


def peer_certificate(
    port: int, server_hostname: str | None = WEBHOOK_HOSTNAME, host: str = "127.0.0.1"
) -> x509.Certificate:
    """The leaf a *new* connection is served, without verifying it — to observe rotations."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def eventually(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.02, message: str = ""
) -> Any:
    """Poll until ``predicate()`` is truthy and return it.

    The bound only exists so a broken build fails instead of hanging; it is generous on purpose
    and is not an assertion about speed.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)
