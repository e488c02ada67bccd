"""Test helper: a throwaway CA + serving certificate and a tiny HTTPS admission-webhook server.

Self-contained on purpose (only ``cryptography`` + stdlib): the fake apiserver's own tests must
not depend on the project's certs/ package, which evolves independently.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVICE_HOST = "qosgate-webhook.qosgate-system.svc"


@dataclass(frozen=True)
class TLSMaterial:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def make_tls(hostnames: tuple[str, ...] = (SERVICE_HOST,)) -> TLSMaterial:
    """A fresh CA and a leaf certificate for ``hostnames`` (SANs; CN is ignored by modern clients)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fakeapi-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return TLSMaterial(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=leaf.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def patch_response(ops: list[dict[str, Any]]) -> dict[str, Any]:
    """An ``allowed`` response carrying a base64 JSONPatch."""
    return {"allowed": True, "patchType": "JSONPatch", "patch": base64.b64encode(orjson.dumps(ops)).decode()}


# handler(path, request) -> response dict (uid/apiVersion/kind are filled in), or a RawReply.
@dataclass
class RawReply:
    status: int
    body: bytes


Handler = Callable[[str, dict[str, Any]], "dict[str, Any] | RawReply"]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # e.g. the apiserver gave up on a deliberately slow webhook: a broken pipe here is expected.
        pass


class WebhookServer:
    """HTTPS AdmissionReview endpoint on 127.0.0.1; records every request it receives."""

    def __init__(self, handler: Handler, tls: TLSMaterial | None = None) -> None:
        self.tls = tls or make_tls()
        self.handler = handler
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out as two writes: without this, Nagle + delayed ACK cost 40 ms a call.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                review = orjson.loads(body)
                req = review["request"]
                with outer._lock:
                    outer.requests.append((self.path, req))
                reply = outer.handler(self.path.split("?")[0], req)
                if isinstance(reply, RawReply):
                    status, data = reply.status, reply.body
                else:
                    status = 200
                    data = orjson.dumps(
                        {
                            "apiVersion": "admission.k8s.io/v1",
                            "kind": "AdmissionReview",
                            "response": {"uid": req["uid"], **reply},
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = _QuietServer(("127.0.0.1", 0), _H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert.write_bytes(self.tls.cert_pem)
            key.write_bytes(self.tls.key_pem)
            ctx.load_cert_chain(cert, key)
        self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = "/mutate") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def received(self, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r for p, r in self.requests if path is None or p.split("?")[0] == path]
