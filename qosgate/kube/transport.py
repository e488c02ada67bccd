"""HTTP(S) to kube-apiserver over urllib3: TLS, authentication and credential refresh — and nothing else.

`KubeClient(config).request(...)` sends one request and returns the *unread* urllib3 response (a watch reads
it line by line; `qosgate.kube.rest` decodes everything else with orjson). It replaces the official client,
whose import alone cost ~38 MB and 0.4 s in every process.

Authentication, as client-go does it (`k8s.io/client-go/transport`, `plugin/pkg/client/auth/exec`):
- a static bearer token, or a token file re-read every minute (bound service-account tokens rotate under a
  running pod) and at once after a 401;
- basic auth; a client certificate and key (files, or data handed to OpenSSL through anonymous memory files,
  else private 0600 files that exist only while it reads them);
- exec credential plugins (client.authentication.k8s.io/v1 and v1beta1): the command runs with its args and
  env plus KUBERNETES_EXEC_INFO, its ExecCredential (token and/or client certificate) is kept until its
  expirationTimestamp, and a 401 runs it again once and retries the request with the new credential.

The CA (file or data), insecure-skip-tls-verify, tls-server-name and proxy-url are honoured; a configuration
that cannot work (unreadable CA, mismatching client key) fails when the client is built, as KubeConfigError.
Failures that produce no HTTP answer raise TransportError.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
import os
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import orjson
import urllib3

from qosgate.kube.kubeconfig import ClientConfig, ExecPlugin, KubeConfigError

__all__ = [
    "POOL_SIZE",
    "KubeClient",
    "KubeError",
    "Timeout",
    "TransportError",
    "parse_exec_credential",
]

log = logging.getLogger(__name__)

# Informers hold one long-lived watch connection each, next to leader election, ledgers and bindings;
# urllib3's default pool of 10 would keep discarding and reopening connections under load.
POOL_SIZE = 32
# client-go re-reads a token file once a minute (transport.NewCachedFileTokenSource).
TOKEN_FILE_PERIOD = 60.0
# A plugin that hangs must not hang every request behind it for ever.
EXEC_TIMEOUT = 60.0
USER_AGENT = "qosgate (python urllib3)"

# (connect, read) seconds, one number for both, or None for no limit.
Timeout = float | tuple[float, float] | None


class KubeError(Exception):
    """Anything that went wrong talking to the API server."""


class TransportError(KubeError):
    """The request did not produce an HTTP answer (refused, reset, timed out, TLS failure, no credential)."""


class _SetupError(Exception):
    """A TLS or proxy setting cannot be used; becomes KubeConfigError at start, TransportError later."""


@dataclass(frozen=True)
class _Credential:
    authorization: str | None = None  # the Authorization header
    client_cert: tuple[bytes, bytes] | None = None  # PEM certificate and key from an exec plugin
    expires: float | None = None  # wall clock


_ANONYMOUS = _Credential()


class _Auth:
    """No credentials. Subclasses produce the credential for a request and may refresh it after a 401."""

    def current(self) -> _Credential:
        return _ANONYMOUS

    def refresh(self, used: _Credential) -> bool:
        """Called after `used` got a 401: True when a retry with `current()` may succeed."""
        return False


class _StaticAuth(_Auth):
    def __init__(self, authorization: str) -> None:
        self._credential = _Credential(authorization)

    def current(self) -> _Credential:
        return self._credential


class _TokenFileAuth(_Auth):
    """A bearer token read from a file, re-read every `period` seconds and after a 401."""

    def __init__(self, path: str, clock: Callable[[], float], period: float = TOKEN_FILE_PERIOD) -> None:
        self.path = path
        self._clock = clock
        self._period = period
        self._lock = threading.Lock()
        self._credential: _Credential | None = None
        self._read_at = 0.0

    def _load(self) -> None:
        self._read_at = self._clock()
        try:
            with open(self.path, encoding="utf-8") as handle:
                token = handle.read().strip()
            if not token:
                raise OSError(f"token file {self.path} is empty")
        except (OSError, UnicodeDecodeError) as exc:
            if self._credential is None:
                raise TransportError(f"cannot read token file {self.path}: {exc}") from None
            # Mid-rotation the file may be briefly missing; the previous token is usually still valid.
            log.warning("keeping the previous token: cannot re-read %s: %s", self.path, exc)
            return
        self._credential = _Credential(f"Bearer {token}")

    def current(self) -> _Credential:
        with self._lock:
            if self._credential is None or self._clock() - self._read_at >= self._period:
                self._load()
            assert self._credential is not None
            return self._credential

    def refresh(self, used: _Credential) -> bool:
        with self._lock:
            if self._credential == used:
                self._load()
            return self._credential != used


def _exec_cluster_info(config: ClientConfig) -> dict[str, Any]:
    """The spec.cluster of KUBERNETES_EXEC_INFO (client.authentication.k8s.io Cluster)."""
    ca = config.ca_data
    if ca is None and config.ca_file:
        with contextlib.suppress(OSError), open(config.ca_file, "rb") as handle:
            ca = handle.read()
    cluster: dict[str, Any] = {"server": config.server}
    if config.tls_server_name:
        cluster["tls-server-name"] = config.tls_server_name
    if config.insecure_skip_tls_verify:
        cluster["insecure-skip-tls-verify"] = True
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode("ascii")
    if config.proxy_url:
        cluster["proxy-url"] = config.proxy_url
    plugin = config.exec_plugin
    if plugin is not None and plugin.cluster_config is not None:
        cluster["config"] = plugin.cluster_config
    return cluster


def _parse_timestamp(value: str) -> float:
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def parse_exec_credential(output: bytes, api_version: str) -> _Credential:
    """An ExecCredential printed by a plugin → the credential; ValueError names what is wrong."""
    try:
        decoded = orjson.loads(output)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"output is not JSON ({exc})") from None
    if not isinstance(decoded, dict) or decoded.get("kind") != "ExecCredential":
        raise ValueError("output is not an ExecCredential")
    if decoded.get("apiVersion") != api_version:
        raise ValueError(f"output has apiVersion {decoded.get('apiVersion')!r}, expected {api_version!r}")
    status = decoded.get("status")
    if not isinstance(status, dict):
        raise ValueError("the ExecCredential has no status")
    token, cert, key = status.get("token"), status.get("clientCertificateData"), status.get("clientKeyData")
    for name, value in (("token", token), ("clientCertificateData", cert), ("clientKeyData", key)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"status.{name} must be a string")
    if bool(cert) != bool(key):
        raise ValueError("status has only one of clientCertificateData and clientKeyData")
    if not token and not cert:
        raise ValueError("status has neither a token nor a client certificate")
    expires = None
    stamp = status.get("expirationTimestamp")
    if stamp is not None:
        try:
            expires = _parse_timestamp(stamp) if isinstance(stamp, str) else None
        except ValueError:
            expires = None
        if expires is None:
            raise ValueError(f"status.expirationTimestamp {stamp!r} is not an RFC 3339 time")
    client_cert = (cert.encode(), key.encode()) if cert and key else None
    return _Credential(f"Bearer {token}" if token else None, client_cert, expires)


class _ExecAuth(_Auth):
    """Runs a credential plugin; its credential is kept until it expires or a request gets a 401."""

    def __init__(self, config: ClientConfig, plugin: ExecPlugin, clock: Callable[[], float]) -> None:
        self._config = config
        self._plugin = plugin
        self._clock = clock
        self._lock = threading.Lock()
        self._credential: _Credential | None = None
        self.runs = 0

    def _run(self) -> _Credential:
        plugin = self._plugin
        spec: dict[str, Any] = {"interactive": False}
        if plugin.provide_cluster_info:
            spec["cluster"] = _exec_cluster_info(self._config)
        info = {"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec}
        env = {**os.environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": orjson.dumps(info).decode()}
        name = f"exec plugin {plugin.command}"
        self.runs += 1
        try:
            done = subprocess.run([plugin.command, *plugin.args], env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=EXEC_TIMEOUT, check=False)
        except FileNotFoundError:
            hint = f" ({plugin.install_hint.strip()})" if plugin.install_hint.strip() else ""
            raise TransportError(f"{name}: not found{hint}") from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise TransportError(f"{name}: {exc}") from None
        stderr = done.stderr.decode("utf-8", "replace").strip()
        if done.returncode != 0:
            detail = f": {stderr[-500:]}" if stderr else ""
            raise TransportError(f"{name} exited with status {done.returncode}{detail}")
        if stderr:
            log.info("%s: %s", name, stderr[-500:])
        try:
            return parse_exec_credential(done.stdout, plugin.api_version)
        except ValueError as exc:
            raise TransportError(f"{name}: {exc}") from None

    def current(self) -> _Credential:
        with self._lock:
            credential = self._credential
            if credential is None or (credential.expires is not None and self._clock() >= credential.expires):
                credential = self._credential = self._run()
            return credential

    def refresh(self, used: _Credential) -> bool:
        with self._lock:
            if self._credential is used:
                self._credential = None
                self._credential = self._run()
            return True  # either ours is new, or another thread already replaced the one that failed


def _make_auth(config: ClientConfig, clock: Callable[[], float]) -> _Auth:
    if config.token:
        return _StaticAuth(f"Bearer {config.token}")
    if config.token_file:
        return _TokenFileAuth(config.token_file, clock)
    if config.username is not None or config.password is not None:
        pair = f"{config.username or ''}:{config.password or ''}".encode()
        return _StaticAuth("Basic " + base64.b64encode(pair).decode("ascii"))
    if config.exec_plugin is not None:
        return _ExecAuth(config, config.exec_plugin, clock)
    return _Auth()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@contextlib.contextmanager
def _private_pair(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """Key material as paths for `load_cert_chain` (which takes nothing else), gone once it has been read.

    On Linux anonymous memory files (nothing touches a disk, and a read-only root file system is no obstacle);
    elsewhere, or where memfd_create is denied, private 0600 files in a 0700 temporary directory.
    """
    fds: list[int] = []
    try:
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                for name, data in (("client.crt", cert_pem), ("client.key", key_pem)):
                    fds.append(os.memfd_create(f"qosgate-{name}", os.MFD_CLOEXEC))
                    _write_all(fds[-1], data)
        if len(fds) == 2:
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
            return
    finally:
        for fd in fds:
            os.close(fd)
    with tempfile.TemporaryDirectory(prefix="qosgate-kube-") as directory:
        cert_path, key_path = os.path.join(directory, "client.crt"), os.path.join(directory, "client.key")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        yield cert_path, key_path


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _SetupError("the client key is encrypted; kubeconfig client keys must be unencrypted")


def _ssl_context(config: ClientConfig, client_cert: tuple[bytes, bytes] | None) -> ssl.SSLContext:
    """The TLS context for the API server: its CA (or the system's), and the client certificate if any."""
    if config.insecure_skip_tls_verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        cadata: str | bytes | None = None
        if config.ca_data is not None:
            cadata = config.ca_data.decode("ascii", "replace") if b"-----BEGIN" in config.ca_data \
                else config.ca_data
        what = f"certificate-authority {config.ca_file}" if config.ca_file else "certificate-authority-data"
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.ca_file, cadata=cadata)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise _SetupError(f"{what}: not usable ({getattr(exc, 'strerror', None) or exc})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        if client_cert is not None:
            with _private_pair(*client_cert) as (cert_path, key_path):
                ctx.load_cert_chain(cert_path, key_path, password=_no_password)
        elif config.client_cert_data is not None and config.client_key_data is not None:
            with _private_pair(config.client_cert_data, config.client_key_data) as (cert_path, key_path):
                ctx.load_cert_chain(cert_path, key_path, password=_no_password)
        elif config.client_cert_file and config.client_key_file:
            ctx.load_cert_chain(config.client_cert_file, config.client_key_file, password=_no_password)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        if reason == "KEY_VALUES_MISMATCH":
            reason = "the key does not match the certificate"
        raise _SetupError(f"client certificate: not usable ({reason})") from None
    return ctx


def _proxy_manager(proxy_url: str, options: dict[str, Any]) -> urllib3.PoolManager:
    parts = urlsplit(proxy_url)
    if parts.scheme in ("socks5", "socks5h", "socks4", "socks4a"):
        try:
            from urllib3.contrib.socks import SOCKSProxyManager
        except ImportError:
            raise _SetupError(f"proxy-url {parts.scheme}:// needs the PySocks package (pip install pysocks)") from None
        socks: urllib3.PoolManager = SOCKSProxyManager(proxy_url, **options)
        return socks
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _SetupError(f"proxy-url {proxy_url!r}: only http, https and socks5 proxies are supported")
    headers = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers = urllib3.make_headers(proxy_basic_auth=credentials)
        proxy_url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return urllib3.ProxyManager(proxy_url, proxy_headers=headers, **options)


def _timeout(timeout: Timeout) -> urllib3.Timeout:
    if timeout is None:
        return urllib3.Timeout(connect=None, read=None)
    if isinstance(timeout, tuple):
        return urllib3.Timeout(connect=timeout[0], read=timeout[1])
    return urllib3.Timeout(total=timeout)


def _reason(exc: BaseException) -> str:
    # MaxRetryError repeats the pool and URL around the cause; the cause is what a reader needs.
    cause = getattr(exc, "reason", None)
    return str(cause) if isinstance(exc, urllib3.exceptions.MaxRetryError) and cause is not None else str(exc)


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    with contextlib.suppress(urllib3.exceptions.HTTPError, OSError):
        response.drain_conn()
    response.release_conn()


class KubeClient:
    """A connection pool to one API server with its credentials; thread-safe. `close()` releases the pool."""

    def __init__(self, config: ClientConfig, *, pool_size: int = POOL_SIZE,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.server = config.server
        self.pool_size = pool_size
        self._auth = _make_auth(config, clock)
        headers = urllib3.HTTPHeaderDict({"User-Agent": USER_AGENT})
        if config.impersonate_user:
            headers["Impersonate-User"] = config.impersonate_user
        if config.impersonate_uid:
            headers["Impersonate-Uid"] = config.impersonate_uid
        for group in config.impersonate_groups:
            headers.add("Impersonate-Group", group)
        for key, values in config.impersonate_extra:
            for value in values:
                headers.add(f"Impersonate-Extra-{quote(key, safe='')}", value)
        self._headers = headers
        # 3 attempts for failures before an answer (like the official client's default); redirects are
        # returned as they are, never followed with our credentials to another host.
        self._retries = urllib3.Retry(total=3, redirect=False, raise_on_status=False)
        self._lock = threading.Lock()
        self._manager_cert: tuple[bytes, bytes] | None = None
        try:
            self._manager = self._build_manager(None)
        except _SetupError as exc:
            raise KubeConfigError(f"{config.source or config.server}: {exc}") from None

    @property
    def host(self) -> str:
        return self.server

    def _build_manager(self, client_cert: tuple[bytes, bytes] | None) -> urllib3.PoolManager:
        options: dict[str, Any] = {"num_pools": 4, "maxsize": self.pool_size, "block": False}
        if self.config.uses_tls:
            options["ssl_context"] = _ssl_context(self.config, client_cert)
            options["cert_reqs"] = "CERT_NONE" if self.config.insecure_skip_tls_verify else "CERT_REQUIRED"
            if self.config.tls_server_name:
                options["server_hostname"] = self.config.tls_server_name
        if self.config.proxy_url:
            return _proxy_manager(self.config.proxy_url, options)
        return urllib3.PoolManager(**options)

    def _manager_for(self, client_cert: tuple[bytes, bytes] | None) -> urllib3.PoolManager:
        """The pool for this credential: a new client certificate from an exec plugin needs new connections."""
        if client_cert is None or client_cert == self._manager_cert:
            return self._manager
        with self._lock:
            if client_cert != self._manager_cert:
                try:
                    manager = self._build_manager(client_cert)
                except _SetupError as exc:
                    raise TransportError(f"exec plugin credential: {exc}") from None
                previous, self._manager, self._manager_cert = self._manager, manager, client_cert
                previous.clear()  # idle connections close now; those in use close when released
            return self._manager

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send a request and return its response unread, whatever its status (the caller releases it)."""
        url = self.server + path
        if query:
            url += "?" + urlencode(list(query), quote_via=quote)
        all_headers = urllib3.HTTPHeaderDict(self._headers)
        if headers:
            all_headers.update(headers)
        limits = _timeout(timeout)
        for attempt in range(2):
            credential = self._auth.current()
            manager = self._manager_for(credential.client_cert)
            if credential.authorization:
                all_headers["Authorization"] = credential.authorization
            try:
                response = manager.urlopen(method, url, body=body, headers=all_headers, timeout=limits,
                                           preload_content=False, redirect=False, retries=self._retries)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise TransportError(f"{method} {path}: {_reason(exc)}") from exc
            if response.status != 401 or attempt:
                return response
            try:
                retry = self._auth.refresh(credential)
            except BaseException:
                _discard(response)
                raise
            if not retry:
                return response
            _discard(response)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._manager.clear()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KubeClient({self.server})"
