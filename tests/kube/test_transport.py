"""KubeClient against real sockets: the fake API server for bearer tokens, token files and exec plugins; a small
HTTPS server (qosgate's own serving layer with `qosgate certs`-made certificates) for TLS, client certificates,
basic auth and impersonation; a forward proxy for proxy-url."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import os
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import urllib3
from cryptography.hazmat.primitives import serialization

from qosgate.certs.generate import ensure_client_certificate
from qosgate.kube.config import kubeconfig_config, load_api_client
from qosgate.kube.kubeconfig import KubeConfigError
from qosgate.kube.rest import ApiError, TransportError, request_json
from qosgate.kube.transport import KubeClient
from qosgate.serving.http import Request, Response, Route
from tests.fakeapi import FakeAPIServer
from tests.support.serving import serve_routes
from tests.support.tls import WEBHOOK_HOSTNAME, make_cert_dir

V1 = "client.authentication.k8s.io/v1"
NAMESPACES = "/api/v1/namespaces"


def write_kubeconfig(directory: Path, server: str, user: dict[str, Any], **cluster: Any) -> Path:
    path = directory / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def users_seen(api: FakeAPIServer) -> list[str]:
    return [record.username for record in api.requests_log]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# --- bearer tokens -----------------------------------------------------------------------------------------

def test_a_static_token_authenticates_and_a_wrong_one_gets_401(fake_api: FakeAPIServer, tmp_path: Path) -> None:
    fake_api.add_user("t-alice", "alice")
    client = load_api_client(str(write_kubeconfig(tmp_path, fake_api.url, {"token": "t-alice"})))
    assert request_json(client, "GET", NAMESPACES)["kind"] == "NamespaceList"
    assert users_seen(fake_api) == ["alice"]
    wrong = load_api_client(str(write_kubeconfig(tmp_path, fake_api.url, {"token": "nope"})))
    with pytest.raises(ApiError) as info:
        request_json(wrong, "GET", NAMESPACES)
    assert info.value.status == 401


def test_a_token_file_is_reread_every_minute_and_after_a_401(fake_api: FakeAPIServer, tmp_path: Path) -> None:
    for token, user in (("t1", "one"), ("t2", "two"), ("t3", "three")):
        fake_api.add_user(token, user)
    token_file = tmp_path / "token"
    token_file.write_text("t1\n")
    clock = Clock()
    client = KubeClient(kubeconfig_config([write_kubeconfig(tmp_path, fake_api.url, {"tokenFile": "token"})]),
                        clock=clock)
    request_json(client, "GET", NAMESPACES)
    token_file.write_text("t2")  # the kubelet rotated the projected token
    request_json(client, "GET", NAMESPACES)  # within the minute: still the token read before
    clock.now += 61
    request_json(client, "GET", NAMESPACES)
    assert users_seen(fake_api) == ["one", "one", "two"]
    token_file.write_text("t3")
    fake_api.remove_user("t2")  # revoked before the next periodic read: the 401 makes us read the file again
    request_json(client, "GET", NAMESPACES)
    assert users_seen(fake_api)[-1] == "three"


def test_an_unreadable_token_file_fails_the_request_not_the_process(fake_api: FakeAPIServer, tmp_path: Path) -> None:
    client = load_api_client(str(write_kubeconfig(tmp_path, fake_api.url, {"tokenFile": "missing"})))
    with pytest.raises(TransportError, match="cannot read token file"):
        request_json(client, "GET", NAMESPACES)


# --- exec credential plugins ---------------------------------------------------------------------------------

PLUGIN = '''#!{python}
"""A client-go credential plugin for tests: what it prints is steered by files next to it."""
import json, os, pathlib, sys
here = pathlib.Path(__file__).parent
runs = here / "runs"
runs.write_text(str(int(runs.read_text()) + 1 if runs.exists() else 1))
(here / "seen.json").write_text(json.dumps({{"args": sys.argv[1:], "env": os.environ.get("PLUGIN_ENV"),
                                            "info": json.loads(os.environ["KUBERNETES_EXEC_INFO"])}}))
mode = (here / "mode").read_text().strip() if (here / "mode").exists() else "token"
if mode == "fail":
    print("the identity provider said no", file=sys.stderr)
    sys.exit(3)
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
status = {{}}
if mode == "token":
    status["token"] = (here / "token").read_text().strip()
if mode == "cert":
    status["clientCertificateData"] = (here / "client.crt").read_text()
    status["clientKeyData"] = (here / "client.key").read_text()
if (here / "expires").exists():
    status["expirationTimestamp"] = (here / "expires").read_text().strip()
version = "wrong/v9" if mode == "wrong-version" else info["apiVersion"]
print(json.dumps({{"apiVersion": version, "kind": "ExecCredential", "status": status}}))
'''


def plugin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "plugin"
    directory.mkdir()
    script = directory / "plugin.py"
    script.write_text(PLUGIN.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return directory


def runs(directory: Path) -> int:
    return int((directory / "runs").read_text()) if (directory / "runs").exists() else 0


def exec_user(api_version: str = V1, **extra: Any) -> dict[str, Any]:
    return {"exec": {"command": "./plugin.py", "apiVersion": api_version, "args": ["get-token", "--fast"],
                     "env": [{"name": "PLUGIN_ENV", "value": "from-kubeconfig"}], **extra}}


def in_rfc3339(delta: dt.timedelta) -> str:
    return (dt.datetime.now(dt.UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("api_version", [V1, "client.authentication.k8s.io/v1beta1"])
def test_exec_plugin_token_is_kept_until_it_expires(fake_api: FakeAPIServer, tmp_path: Path,
                                                    api_version: str) -> None:
    fake_api.add_user("e1", "exec-user")
    directory = plugin_dir(tmp_path)
    (directory / "token").write_text("e1")
    (directory / "expires").write_text(in_rfc3339(dt.timedelta(hours=1)))
    client = load_api_client(str(write_kubeconfig(directory, fake_api.url, exec_user(api_version,
                                                                                     provideClusterInfo=True))))
    for _ in range(3):
        request_json(client, "GET", NAMESPACES)
    assert users_seen(fake_api) == ["exec-user"] * 3 and runs(directory) == 1
    seen = json.loads((directory / "seen.json").read_text())
    assert seen["args"] == ["get-token", "--fast"] and seen["env"] == "from-kubeconfig"
    assert seen["info"]["apiVersion"] == api_version and seen["info"]["kind"] == "ExecCredential"
    assert seen["info"]["spec"]["interactive"] is False
    assert seen["info"]["spec"]["cluster"]["server"] == fake_api.url


def test_an_expired_exec_credential_is_not_reused(fake_api: FakeAPIServer, tmp_path: Path) -> None:
    fake_api.add_user("e1", "exec-user")
    directory = plugin_dir(tmp_path)
    (directory / "token").write_text("e1")
    (directory / "expires").write_text(in_rfc3339(-dt.timedelta(seconds=1)))
    client = load_api_client(str(write_kubeconfig(directory, fake_api.url, exec_user())))
    request_json(client, "GET", NAMESPACES)
    request_json(client, "GET", NAMESPACES)
    assert runs(directory) == 2
    assert "cluster" not in json.loads((directory / "seen.json").read_text())["info"]["spec"]  # not asked for


def test_a_401_runs_the_plugin_again_once_and_retries(fake_api: FakeAPIServer, tmp_path: Path) -> None:
    fake_api.add_user("e1", "first")
    fake_api.add_user("e2", "second")
    directory = plugin_dir(tmp_path)
    (directory / "token").write_text("e1")  # no expiry: kept until the server refuses it
    client = load_api_client(str(write_kubeconfig(directory, fake_api.url, exec_user())))
    request_json(client, "GET", NAMESPACES)
    (directory / "token").write_text("e2")
    fake_api.remove_user("e1")
    request_json(client, "GET", NAMESPACES)
    assert users_seen(fake_api) == ["first", "second"] and runs(directory) == 2
    fake_api.remove_user("e2")  # a credential the plugin cannot renew: one retry, then the 401 stands
    with pytest.raises(ApiError) as info:
        request_json(client, "GET", NAMESPACES)
    assert info.value.status == 401 and runs(directory) == 3


@pytest.mark.parametrize("mode, message", [
    ("fail", "exited with status 3: the identity provider said no"),
    ("wrong-version", "apiVersion 'wrong/v9', expected"),
    ("empty", "neither a token nor a client certificate"),
])
def test_a_failing_plugin_is_a_transport_error_saying_why(fake_api: FakeAPIServer, tmp_path: Path, mode: str,
                                                          message: str) -> None:
    directory = plugin_dir(tmp_path)
    (directory / "mode").write_text(mode)
    client = load_api_client(str(write_kubeconfig(directory, fake_api.url, exec_user())))
    with pytest.raises(TransportError, match=message):
        request_json(client, "GET", NAMESPACES)


def test_a_missing_plugin_names_its_install_hint(fake_api: FakeAPIServer, tmp_path: Path) -> None:
    user = {"exec": {"command": "qosgate-no-such-plugin", "apiVersion": V1, "installHint": "install it from x"}}
    client = load_api_client(str(write_kubeconfig(tmp_path, fake_api.url, user)))
    with pytest.raises(TransportError, match=r"not found.*install it from x"):
        request_json(client, "GET", NAMESPACES)


# --- TLS -----------------------------------------------------------------------------------------------------

def echo(request: Request) -> Response:
    certificate = request.client_certificate
    subject = dict(rdn[0] for rdn in certificate["subject"]) if certificate else {}
    return Response(200, orjson.dumps({"headers": dict(request.headers), "query": request.query,
                                       "cn": subject.get("commonName")}))


ROUTES = [Route("GET", "/echo", echo, content_types=None),
          Route("GET", "/prefix/echo", echo, content_types=None),
          Route("GET", "/secure", echo, content_types=None, client_certificate_required=True)]


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    cert_dir = make_cert_dir(tmp_path / "server")
    with serve_routes(ROUTES, cert_dir, client_ca_file=cert_dir / "ca.crt") as port:
        yield cert_dir, port


def tls_client(directory: Path, port: int, user: dict[str, Any] | None = None, **cluster: Any) -> KubeClient:
    return load_api_client(str(write_kubeconfig(directory, f"https://127.0.0.1:{port}", user or {}, **cluster)))


def test_the_ca_and_tls_server_name_verify_the_server(tls_server: tuple[Path, int], tmp_path: Path) -> None:
    cert_dir, port = tls_server
    client = tls_client(tmp_path, port, {"token": "t"}, **{"certificate-authority": str(cert_dir / "ca.crt"),
                                                          "tls-server-name": WEBHOOK_HOSTNAME})
    answer = request_json(client, "GET", "/echo", query=[("labelSelector", "a in (x,y)")])
    assert answer["headers"]["authorization"] == "Bearer t" and answer["cn"] is None
    assert answer["query"] == "labelSelector=a%20in%20%28x%2Cy%29"
    assert answer["headers"]["user-agent"].startswith("qosgate")
    # tls-server-name is the name verified (and sent as SNI), whatever address is dialled.
    misnamed = tls_client(tmp_path, port, **{"certificate-authority": str(cert_dir / "ca.crt"),
                                             "tls-server-name": "api.example.com"})
    with pytest.raises(TransportError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
        request_json(misnamed, "GET", "/echo")


def test_a_server_from_another_ca_is_refused_unless_verification_is_skipped(tls_server: tuple[Path, int],
                                                                           tmp_path: Path) -> None:
    _, port = tls_server
    other = make_cert_dir(tmp_path / "other")
    pinned = tls_client(tmp_path, port, **{"certificate-authority-data": _b64((other / "ca.crt").read_bytes()),
                                           "tls-server-name": WEBHOOK_HOSTNAME})
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        request_json(pinned, "GET", "/echo")
    insecure = tls_client(tmp_path, port, **{"insecure-skip-tls-verify": True})
    with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
        assert request_json(insecure, "GET", "/echo")["cn"] is None


@pytest.mark.parametrize("memfd", [True, False], ids=["memfd", "temp-files"])
def test_client_certificate_data_is_presented(tls_server: tuple[Path, int], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch, memfd: bool) -> None:
    cert_dir, port = tls_server
    cert, key = ensure_client_certificate(cert_dir)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    if not memfd:  # another OS, or a seccomp profile denying memfd_create
        monkeypatch.delattr(os, "memfd_create", raising=False)
    trust = {"certificate-authority": str(cert_dir / "ca.crt"), "tls-server-name": WEBHOOK_HOSTNAME}
    client = tls_client(tmp_path, port, {"client-certificate-data": _b64(cert.read_bytes()),
                                         "client-key-data": _b64(key.read_bytes())}, **trust)
    assert list(scratch.iterdir()) == []  # the key was on disk only while OpenSSL read it
    assert request_json(client, "GET", "/secure")["cn"] == "qosgate-scheduler"
    anonymous = tls_client(tmp_path, port, **trust)
    with pytest.raises(ApiError) as info:
        request_json(anonymous, "GET", "/secure")
    assert info.value.status == 401


def test_unusable_tls_material_fails_at_load_in_one_line(tls_server: tuple[Path, int], tmp_path: Path) -> None:
    cert_dir, port = tls_server
    cert, _ = ensure_client_certificate(cert_dir)
    _, other_key = ensure_client_certificate(make_cert_dir(tmp_path / "other"))
    with pytest.raises(KubeConfigError, match="client certificate: not usable") as info:
        tls_client(tmp_path, port, {"client-certificate": str(cert), "client-key": str(other_key)})
    assert "\n" not in str(info.value)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(serialization.load_pem_private_key(other_key.read_bytes(), password=None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(KubeConfigError, match="encrypted"):  # refused, never a terminal prompt
        tls_client(tmp_path, port, {"client-certificate": str(cert), "client-key": str(encrypted)})
    with pytest.raises(KubeConfigError, match="certificate-authority"):
        tls_client(tmp_path, port, **{"certificate-authority": str(tmp_path / "missing.crt")})


def test_an_exec_plugin_can_supply_the_client_certificate(tls_server: tuple[Path, int], tmp_path: Path) -> None:
    cert_dir, port = tls_server
    cert, key = ensure_client_certificate(cert_dir)
    directory = plugin_dir(tmp_path)
    (directory / "mode").write_text("cert")
    (directory / "client.crt").write_bytes(cert.read_bytes())
    (directory / "client.key").write_bytes(key.read_bytes())
    client = tls_client(directory, port, exec_user(), **{"certificate-authority": str(cert_dir / "ca.crt"),
                                                         "tls-server-name": WEBHOOK_HOSTNAME})
    assert request_json(client, "GET", "/secure")["cn"] == "qosgate-scheduler"
    assert request_json(client, "GET", "/secure")["cn"] == "qosgate-scheduler"
    assert runs(directory) == 1
    client.close()


# --- plain HTTP: basic auth, impersonation, a server path prefix ----------------------------------------------

def test_basic_auth_impersonation_and_a_path_prefix(tmp_path: Path) -> None:
    with serve_routes(ROUTES, None) as port:
        user = {"username": "admin", "password": "s3cret", "as": "jane", "as-groups": ["devs", "ops"],
                "as-user-extra": {"reason/why": ["debugging"]}}
        client = load_api_client(str(write_kubeconfig(tmp_path, f"http://127.0.0.1:{port}/prefix/", user)))
        headers = request_json(client, "GET", "/echo")["headers"]
    assert headers["authorization"] == "Basic " + _b64(b"admin:s3cret")
    assert headers["impersonate-user"] == "jane"
    assert "devs" in headers["impersonate-group"] and "ops" in headers["impersonate-group"]
    assert headers["impersonate-extra-reason%2fwhy"] == "debugging"


# --- proxy-url -----------------------------------------------------------------------------------------------

class _Proxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy for plain HTTP: GET http://host:port/path → the same request to that server."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        import urllib.request

        _Proxy.seen.append((self.path, self.headers.get("Proxy-Authorization")))
        forwarded = urllib.request.Request(self.path, headers={k: v for k, v in self.headers.items()
                                                               if not k.lower().startswith("proxy-")})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(forwarded) as answer:
            body = answer.read()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_requests_go_through_proxy_url_with_its_credentials(fake_api: FakeAPIServer, tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Proxy.seen = []
    try:
        proxy = f"http://user:p%40ss@127.0.0.1:{server.server_port}"
        client = load_api_client(str(write_kubeconfig(tmp_path, fake_api.url, {"token": "admin"},
                                                      **{"proxy-url": proxy})))
        assert request_json(client, "GET", NAMESPACES)["kind"] == "NamespaceList"
    finally:
        server.shutdown()
        server.server_close()
    assert _Proxy.seen == [(f"{fake_api.url}{NAMESPACES}", "Basic " + _b64(b"user:p@ss"))]


def test_socks_or_unknown_proxies_are_named(fake_api: FakeAPIServer, tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="proxy-url"):
        load_api_client(str(write_kubeconfig(tmp_path, fake_api.url, {}, **{"proxy-url": "gopher://x:70"})))


def test_close_releases_the_pool(fake_api: FakeAPIServer) -> None:
    client = fake_api.kube_client()
    request_json(client, "GET", NAMESPACES)
    client.close()
    assert request_json(client, "GET", NAMESPACES)["kind"] == "NamespaceList"  # a closed pool reconnects
