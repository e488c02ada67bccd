"""HTTPS serving through uvicorn: verification as kube-apiserver does it, hot reload, shutdown."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

from qosgate.certs.generate import atomic_write, renew_serving_certificate
from qosgate.serving.tls import CertificateLoadError, TLSServer, running_server
from tests.support.tls import (
    async_https_client,
    client_ssl_context,
    eventually,
    https_client,
    make_cert_dir,
    peer_certificate,
    serve_app,
)

REPO = Path(__file__).resolve().parents[2]
FAST_RELOAD = 0.02  # polls often so tests don't wait; correctness never depends on it

# The reload must work on both loops uvicorn may pick: uvloop drives TLS through its own SSL
# protocol implementation, so the SNI-callback swap is exercised on each.
LOOPS = [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="no uvloop")),
]


def make_app() -> tuple[FastAPI, threading.Event, threading.Event]:
    app = FastAPI()
    entered, release = threading.Event(), threading.Event()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    @app.get("/slow")
    def slow() -> dict[str, bool]:
        # Sync endpoint: runs in uvicorn's thread pool, so blocking here doesn't stall the loop.
        entered.set()
        return {"released": release.wait(60)}

    return app, entered, release


def fp(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def install(src: Path, dst: Path) -> None:
    """Rotate like an operator would: key, then cert, then the CA clients should trust."""
    atomic_write(dst / "tls.key", (src / "tls.key").read_bytes(), 0o600)
    atomic_write(dst / "tls.crt", (src / "tls.crt").read_bytes(), 0o644)
    atomic_write(dst / "ca.crt", (src / "ca.crt").read_bytes(), 0o644)


# ---- verification the way kube-apiserver does it --------------------------------------------


def test_client_verifies_ca_and_service_name(cert_dir: Path) -> None:
    app, _, _ = make_app()
    with serve_app(app, cert_dir) as port, https_client(cert_dir, port) as client:
        assert client.get("/ping").json() == {"pong": "yes"}


def test_wrong_service_name_fails_verification(cert_dir: Path) -> None:
    app, _, _ = make_app()
    with serve_app(app, cert_dir) as port:
        # 127.0.0.1 *is* a SAN of the certificate, so this failure proves the name checked is the
        # service name we asked for, not the address dialled.
        with (
            https_client(cert_dir, port, server_hostname="qosgate-other.qosgate-system.svc") as client,
            pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|match"),
        ):
            client.get("/ping")
        with https_client(cert_dir, port, server_hostname="qosgate-webhook.qosgate-system.svc") as client:
            assert client.get("/ping").status_code == 200


def test_certificate_from_another_ca_fails_verification(cert_dir: Path, tmp_path: Path) -> None:
    app, _, _ = make_app()
    stranger = make_cert_dir(tmp_path / "stranger")
    with (
        serve_app(app, cert_dir) as port,
        https_client(stranger, port) as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get("/ping")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_clients(cert_dir: Path, version: ssl.TLSVersion) -> None:
    app, _, _ = make_app()
    ctx = client_ssl_context(cert_dir)
    ctx.minimum_version = ctx.maximum_version = version
    expected = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    with (
        serve_app(app, cert_dir) as port,
        socket.create_connection(("127.0.0.1", port)) as raw,
        ctx.wrap_socket(raw, server_hostname="qosgate-webhook.qosgate-system.svc") as tls,
    ):
        assert tls.version() == expected


def test_async_client(cert_dir: Path) -> None:
    app, _, _ = make_app()

    async def call(port: int) -> dict[str, str]:
        async with async_https_client(cert_dir, port) as client:
            return (await client.get("/ping")).json()

    with serve_app(app, cert_dir) as port:
        assert asyncio.run(call(port)) == {"pong": "yes"}


def test_several_apps_on_several_ports_share_one_certificate(cert_dir: Path) -> None:
    webhook, _, _ = make_app()
    extender = FastAPI()

    @extender.get("/ping")
    def extender_ping() -> dict[str, str]:
        return {"from": "extender"}

    with running_server([(webhook, 0), (extender, 0)], cert_dir) as server:
        webhook_port, extender_port = server.ports
        assert webhook_port != extender_port
        with https_client(cert_dir, webhook_port) as client:
            assert client.get("/ping").json() == {"pong": "yes"}
        with https_client(cert_dir, extender_port) as client:
            assert client.get("/ping").json() == {"from": "extender"}


# ---- hot reload -----------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_rotation_to_a_new_ca_is_served_to_new_connections_while_in_flight_requests_finish(
    fresh_cert_dir: Path, tmp_path: Path, loop: str
) -> None:
    app, entered, release = make_app()
    new = make_cert_dir(tmp_path / "new")
    with (
        running_server([(app, 0)], fresh_cert_dir, reload_interval=FAST_RELOAD, loop=loop) as server,
        ThreadPoolExecutor(1) as pool,
    ):
        port = server.ports[0]
        old_fp = fp(peer_certificate(port))
        old_client = https_client(fresh_cert_dir, port)  # trusts only the old CA
        in_flight = pool.submit(old_client.get, "/slow")
        assert entered.wait(60)

        install(new, fresh_cert_dir)
        eventually(lambda: fp(peer_certificate(port)) != old_fp, message="new certificate never served")
        assert fp(peer_certificate(port)) == fp(x509.load_pem_x509_certificate((new / "tls.crt").read_bytes()))
        assert server.reloader.reloads == 1

        release.set()
        response = in_flight.result(60)  # the connection negotiated before the reload is unaffected
        assert response.status_code == 200 and response.json() == {"released": True}
        old_client.close()

        with https_client(fresh_cert_dir, port) as client:  # fresh_cert_dir/ca.crt is the new CA now
            assert client.get("/ping").status_code == 200
        with https_client(tmp_path / "new", port) as client:
            assert client.get("/ping").status_code == 200


def test_new_serving_cert_from_the_same_ca_keeps_existing_clients_working(fresh_cert_dir: Path) -> None:
    app, _, _ = make_app()
    with running_server([(app, 0)], fresh_cert_dir, reload_interval=FAST_RELOAD) as server:
        port = server.ports[0]
        before = server.reloader.fingerprint
        with https_client(fresh_cert_dir, port) as client:
            assert client.get("/ping").status_code == 200
            renew_serving_certificate(fresh_cert_dir, "qosgate-webhook", "qosgate-system")
            eventually(lambda: server.reloader.fingerprint != before)
            assert fp(peer_certificate(port)).hex() == server.reloader.fingerprint
            # Same CA: the caBundle is unchanged, so the same client keeps verifying new handshakes.
            assert client.get("/ping").status_code == 200
        with https_client(fresh_cert_dir, port) as client:
            assert client.get("/ping").status_code == 200


@pytest.mark.parametrize("loop", LOOPS)
def test_invalid_new_certificate_keeps_the_old_one_serving(fresh_cert_dir: Path, tmp_path: Path, loop: str) -> None:
    app, _, _ = make_app()
    with running_server([(app, 0)], fresh_cert_dir, reload_interval=FAST_RELOAD, loop=loop) as server:
        port = server.ports[0]
        old_fp = fp(peer_certificate(port))
        (fresh_cert_dir / "tls.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\ntruncated")
        eventually(lambda: server.reloader.last_error, message="bad certificate never noticed")
        assert fp(peer_certificate(port)) == old_fp
        with https_client(fresh_cert_dir, port) as client:
            assert client.get("/ping").status_code == 200

        # A mismatched pair (new cert, old key) is refused too.
        other = make_cert_dir(tmp_path / "other")
        atomic_write(fresh_cert_dir / "tls.crt", (other / "tls.crt").read_bytes())
        eventually(lambda: "does not match" in (server.reloader.last_error or ""))
        assert fp(peer_certificate(port)) == old_fp
        assert server.reloader.reloads == 0 and server.reloader.is_valid()


@pytest.mark.parametrize("loop", LOOPS)
def test_rotating_rsa_to_ecdsa_stops_serving_the_rsa_certificate(tmp_path: Path, loop: str) -> None:
    # OpenSSL keeps one certificate per key type in a context; reloading in place would leave the
    # old RSA certificate for RSA-only clients. The swap must make it disappear entirely.
    directory = make_cert_dir(tmp_path / "live", key_type="rsa")
    app, _, _ = make_app()
    rsa_only = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    rsa_only.check_hostname = False
    rsa_only.maximum_version = ssl.TLSVersion.TLSv1_2
    rsa_only.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")

    def rsa_handshake(port: int) -> None:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            rsa_only.wrap_socket(raw, server_hostname="qosgate-webhook.qosgate-system.svc"),
        ):
            pass

    with running_server([(app, 0)], directory, reload_interval=FAST_RELOAD, loop=loop) as server:
        port = server.ports[0]
        rsa_handshake(port)
        install(make_cert_dir(tmp_path / "ec"), directory)
        eventually(lambda: server.reloader.reloads == 1)
        assert isinstance(peer_certificate(port).public_key(), ec.EllipticCurvePublicKey)
        with pytest.raises(ssl.SSLError):
            rsa_handshake(port)


def test_readiness_state_is_exposed(cert_dir: Path) -> None:
    app, _, _ = make_app()
    with running_server([(app, 0)], cert_dir) as server:
        assert server.reloader.is_valid()
        assert server.reloader.not_after == peer_certificate(server.ports[0]).not_valid_after_utc


# ---- startup and shutdown -------------------------------------------------------------------


def test_unusable_certificate_fails_before_binding(tmp_path: Path) -> None:
    app, _, _ = make_app()
    with pytest.raises(CertificateLoadError, match="cannot read"):
        TLSServer([(app, 0)], tmp_path / "nothing-here")


def test_app_startup_failure_stops_every_server_and_raises(cert_dir: Path) -> None:
    @asynccontextmanager
    async def broken_lifespan(_app: FastAPI):
        raise RuntimeError("catalog missing")
        yield

    good, _, _ = make_app()
    bad = FastAPI(lifespan=broken_lifespan)
    with pytest.raises(RuntimeError, match="did not start"), running_server([(good, 0), (bad, 0)], cert_dir):
        pass  # pragma: no cover - startup must fail


def test_port_in_use_is_an_oserror(cert_dir: Path) -> None:
    app, _, _ = make_app()
    with running_server([(app, 0)], cert_dir) as server:
        clash = TLSServer([(app, server.ports[0])], cert_dir, host="127.0.0.1", configure_logging=False)
        with pytest.raises(OSError):
            clash.bind()


SERVER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from fastapi import FastAPI
    from qosgate.serving.tls import TLSServer

    app = FastAPI()

    @app.get("/slow")
    async def slow():
        print("entered", flush=True)
        while not os.path.exists(sys.argv[2]):  # held open until the test has seen shutdown begin
            await asyncio.sleep(0.01)
        return {"finished": True}

    server = TLSServer([(app, 0), (app, 0)], sys.argv[1], host="127.0.0.1", configure_logging=False)
    print(json.dumps(server.bind()), flush=True)
    server.run()
    print("exited cleanly", flush=True)
    """
)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return True
    return False


def test_sigterm_stops_accepting_drains_in_flight_requests_then_exits_zero(cert_dir: Path, tmp_path: Path) -> None:
    release = tmp_path / "release"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, str(cert_dir), str(release)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ports = json.loads(proc.stdout.readline())
        with ThreadPoolExecutor(1) as pool, https_client(cert_dir, ports[1]) as client:
            in_flight = pool.submit(client.get, "/slow")
            assert proc.stdout.readline().strip() == "entered"
            proc.send_signal(signal.SIGTERM)
            # Both apps stop listening (one signal shuts down every server)…
            eventually(lambda: all(refuses_connections(p) for p in ports), message="still accepting")
            assert proc.poll() is None  # …but the process waits for the in-flight request
            release.touch()
            response = in_flight.result(60)
        assert response.status_code == 200 and response.json() == {"finished": True}
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "exited cleanly" in out
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
