"""The benchmarks' null baseline: qosgate's own serving path with no decisions behind it.

Built exactly like ``qosgate.cli.serve.build_server``: one ``qosgate.serving`` Server, an HTTPS Listener
per component with a CertReloader (the extender's with the client CA, so its verbs require a client
certificate), the probe routes, a plain health listener, the default Limits, ``lifecycle.run`` (uvloop,
SIGTERM drain), JSON logs. Only the routes differ: ``null_webhook_routes()`` (decode the review, allow,
encode) and ``null_extender_routes()`` (decode, pass every node / score 0, encode). So
``qosgate / null`` isolates what qosgate's decisions cost on top of the transport.

``--bare`` serves a fixed response from a minimal thread-per-connection TLS server with TCP_NODELAY and
one write per response instead: the floor a keep-alive round trip can reach on this machine.

    python -m bench.nullserve --cert-dir DIR --webhook-port P [--extender-port P] [--health-port P]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import threading
from pathlib import Path

from qosgate.extender.app import null_extender_routes
from qosgate.serving.health import health_routes, probe_routes
from qosgate.serving.http import Router
from qosgate.serving.http2 import H2_ALPN
from qosgate.serving.lifecycle import Lifecycle, run
from qosgate.serving.logs import configure_logging
from qosgate.serving.server import Limits, Listener, Server
from qosgate.serving.tls import CA_CERT_FILE, TLS_CERT_FILE, TLS_KEY_FILE, CertReloader
from qosgate.webhook.app import null_webhook_routes


def build_null_server(cert_dir: Path, ports: dict[str, int | None],
                      host: str = "127.0.0.1") -> tuple[Server, Lifecycle]:
    """`ports`: webhook / extender / health → port (None or absent: not served; 0: a free port)."""
    lifecycle = Lifecycle()
    listeners = []
    webhook, extender, health = ports.get("webhook"), ports.get("extender"), ports.get("health")
    if webhook is not None:
        routes = [*null_webhook_routes(), *probe_routes(lifecycle.readiness)]
        listeners.append(Listener("webhook", Router(routes, "webhook"), webhook, host,
                                  CertReloader(cert_dir / TLS_CERT_FILE, cert_dir / TLS_KEY_FILE)))
    if extender is not None:
        routes = [*null_extender_routes(client_certificate_required=True), *probe_routes(lifecycle.readiness)]
        listeners.append(Listener("extender", Router(routes, "extender"), extender, host,
                                  CertReloader(cert_dir / TLS_CERT_FILE, cert_dir / TLS_KEY_FILE,
                                               client_ca_file=cert_dir / CA_CERT_FILE, alpn=H2_ALPN)))
    if health:
        listeners.append(Listener("health", Router(health_routes(lifecycle.readiness), "health"), health, host))
    server = Server(listeners, Limits())
    server.bind()
    return server, lifecycle


def serve_bare(cert_dir: Path, port: int, health_port: int, body: bytes) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
    response = head + body

    def connection(tls: ssl.SSLSocket) -> None:
        buffer = b""
        with contextlib.suppress(OSError), tls:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = tls.recv(1 << 20)
                    if not chunk:
                        return
                    buffer += chunk
                request_head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = next((int(line.split(b":")[1]) for line in request_head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buffer) < length:
                    buffer += tls.recv(1 << 20)
                buffer = buffer[length:]
                tls.sendall(response)

    def accept(listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                tls = context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                continue
            threading.Thread(target=connection, args=(tls,), daemon=True).start()

    def health(listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    threading.Thread(target=health, args=(socket.create_server(("127.0.0.1", health_port)),), daemon=True).start()
    accept(socket.create_server(("127.0.0.1", port)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--webhook-port", type=int)
    parser.add_argument("--extender-port", type=int)
    parser.add_argument("--health-port", type=int, default=0)
    parser.add_argument("--bare", type=Path, metavar="BODY_FILE", help="serve this body from a bare TLS server")
    parser.add_argument("--bare-port", type=int)
    args = parser.parse_args()
    if args.bare:
        serve_bare(args.cert_dir, args.bare_port, args.health_port, args.bare.read_bytes())
        return
    configure_logging("warning", "json")
    server, lifecycle = build_null_server(args.cert_dir, {"webhook": args.webhook_port,
                                                          "extender": args.extender_port,
                                                          "health": args.health_port})
    run(server, lifecycle, shutdown_delay=0.0, graceful_timeout=2.0)


if __name__ == "__main__":
    main()
