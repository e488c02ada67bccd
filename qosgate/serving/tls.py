"""Serve ASGI apps with uvicorn over HTTPS, reloading the certificate when its files change.

uvicorn builds its ``ssl.SSLContext`` once at startup and never looks at the files again, but the
serving certificate is rotated underneath us (cert-manager renewing the Secret, ``qosgate certs
ensure`` in a CronJob, kubelet swapping the Secret volume's ``..data`` symlink).

How the reload works, and why this way:

- uvicorn 0.54's supported hook ``Config(ssl_context_factory=…)`` hands uvicorn one long-lived
  *listening* context (``CertReloader.context``). It never holds a certificate itself; its
  ``sni_callback`` — which OpenSSL calls for every ClientHello, with or without SNI — points the
  new connection at the *current serving* context.
- A reload builds a complete new serving context from the exact bytes read (validated: PEM
  parses, key matches the leaf, leaf not expired, OpenSSL accepts the pair) and then swaps one
  reference. Handshakes see either the old or the new pair, never a mix; established
  connections keep the certificate they negotiated with.
- Calling ``load_cert_chain`` on the live context instead would be neither atomic nor complete:
  OpenSSL replaces the certificate before checking the key (a mismatching key leaves the context
  with *no* usable key), and it keeps one certificate per key algorithm, so rotating RSA → ECDSA
  would keep handing the old RSA certificate to clients that prefer RSA.
- A bad or half-written pair (cert replaced, key not yet) is logged once and the old pair keeps
  serving; the next poll picks up the completed pair.

Several apps (webhook + extender) run as separate uvicorn ``Server`` instances in one event loop
sharing one reloader. uvicorn's per-server signal capture would have the servers overwrite each
other's handlers, so :class:`TLSServer` owns SIGTERM/SIGINT and asks every server to exit; each
then runs uvicorn's own graceful shutdown (stop accepting, finish in-flight requests, bounded by
``graceful_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import hashlib
import logging
import os
import signal
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import uvicorn.config
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.types import ASGIApp

from qosgate.certs.generate import TLS_CERT_FILE, TLS_KEY_FILE

__all__ = [
    "DEFAULT_GRACEFUL_TIMEOUT",
    "DEFAULT_RELOAD_INTERVAL",
    "ASGIApp",
    "CertReloader",
    "CertificateLoadError",
    "TLSServer",
    "running_app",
    "running_server",
    "serve",
]

logger = logging.getLogger("qosgate.certs")

DEFAULT_RELOAD_INTERVAL = 2.0
# Kubernetes' default terminationGracePeriodSeconds is 30 s; finish well inside it.
DEFAULT_GRACEFUL_TIMEOUT = 25.0


class CertificateLoadError(Exception):
    """The certificate/key pair on disk cannot be served."""


@dataclass(frozen=True)
class _Loaded:
    """One validated certificate/key pair and the serving context built from it."""

    context: ssl.SSLContext
    digest: bytes  # of the raw cert + key bytes, to notice changes without re-parsing
    certificate: x509.Certificate
    fingerprint: str  # SHA-256 of the leaf's DER, hex


def _new_server_context(minimum_version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # PROTOCOL_TLS_SERVER already defaults to 1.2, but the floor is a policy, so state it.
    ctx.minimum_version = minimum_version
    return ctx


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def _pem_paths(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """Expose in-memory PEM bytes as paths, because ``load_cert_chain`` only accepts paths.

    Loading from the real files after validating them would race with the next rotation, so the
    exact validated bytes are loaded. On Linux they live in anonymous memory files (the key never
    touches a disk, and webhooks commonly run with a read-only root file system); where memfds are
    unavailable (other OSes, a seccomp profile denying memfd_create) in a private temp directory.
    """
    fds: list[int] = []
    try:
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                for name, data in (("tls.crt", cert_pem), ("tls.key", key_pem)):
                    fds.append(os.memfd_create(f"qosgate-{name}", os.MFD_CLOEXEC))
                    _write_all(fds[-1], data)
        if len(fds) == 2:
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
            return
    finally:
        for fd in fds:
            os.close(fd)
    with tempfile.TemporaryDirectory(prefix="qosgate-tls-") as tmp:
        cert_path, key_path = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        yield cert_path, key_path


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class CertReloader:
    """Owns the listening ``SSLContext`` and keeps it serving the newest valid cert/key pair.

    Construction loads the pair and raises :class:`CertificateLoadError` if it is unusable, so a
    misconfigured pod fails at startup instead of serving nothing. Afterwards :meth:`check`
    (called every ``interval`` seconds by :meth:`run`) swaps in changed files.

    Read-only state for metrics and readiness: :attr:`not_after`, :attr:`fingerprint`,
    :meth:`is_valid`, :attr:`last_error`, :attr:`reloads`.
    """

    def __init__(
        self,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        *,
        interval: float = DEFAULT_RELOAD_INTERVAL,
        minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"reload interval must be positive, got {interval}")
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.interval = interval
        self._minimum_version = minimum_version
        self._alpn: list[str] | None = None
        self._lock = threading.Lock()  # serialises check() between the poll task and manual callers
        self.reloads = 0  # successful swaps after the initial load
        self.checks = 0  # completed checks, successful or not
        self.last_error: str | None = None  # why the newest pair on disk was rejected, if it was
        self._rejected_digest: bytes | None = None
        try:
            cert_pem, key_pem = self._read()
        except OSError as exc:
            raise CertificateLoadError(f"cannot read certificate/key: {exc}") from exc
        self._current = self._build(cert_pem, key_pem)
        # The listening context never carries a certificate: every handshake is redirected to the
        # current serving context, so a handshake that somehow skipped the callback fails closed
        # rather than silently serving a stale certificate.
        self.context = _new_server_context(minimum_version)
        self.context.sni_callback = self._select_context
        logger.info(
            "serving certificate %s (sha256 %s, valid until %s)",
            self.cert_file,
            self.fingerprint[:16],
            self.not_after.isoformat(),
        )

    # ---- state -------------------------------------------------------------------------------

    @property
    def certificate(self) -> x509.Certificate:
        return self._current.certificate

    @property
    def not_after(self) -> dt.datetime:
        """notAfter of the certificate new handshakes get (UTC, aware) — for an expiry gauge."""
        return self._current.certificate.not_valid_after_utc

    @property
    def fingerprint(self) -> str:
        return self._current.fingerprint

    def is_valid(self, now: dt.datetime | None = None) -> bool:
        """Whether the certificate being served is inside its validity window — for /readyz."""
        moment = now or dt.datetime.now(dt.UTC)
        cert = self._current.certificate
        return cert.not_valid_before_utc <= moment < cert.not_valid_after_utc

    # ---- TLS plumbing ------------------------------------------------------------------------

    def set_alpn_protocols(self, protocols: Sequence[str] | None) -> None:
        """Advertise ALPN protocols (uvicorn's HTTP/2 implementation needs them) on every context."""
        self._alpn = list(protocols) if protocols else None
        for ctx in (self.context, self._current.context):
            if self._alpn:
                ctx.set_alpn_protocols(self._alpn)

    def _select_context(self, ssl_obj: Any, server_name: str | None, _listening: ssl.SSLContext) -> None:
        # Runs inside OpenSSL's ClientHello processing; keep it trivial — an exception here would
        # abort the handshake. Reading one attribute is atomic, so no lock is needed.
        ssl_obj.context = self._current.context

    def _read(self) -> tuple[bytes, bytes]:
        return self.cert_file.read_bytes(), self.key_file.read_bytes()

    def _build(self, cert_pem: bytes, key_pem: bytes) -> _Loaded:
        """Validate a pair and build its serving context; raise CertificateLoadError naming the problem."""
        try:
            chain = x509.load_pem_x509_certificates(cert_pem)
        except ValueError as exc:
            raise CertificateLoadError(f"{self.cert_file}: no valid PEM certificate ({exc})") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise CertificateLoadError(f"{self.key_file}: no valid unencrypted PEM private key ({exc})") from None
        leaf = chain[0]
        if _spki(leaf.public_key()) != _spki(key.public_key()):
            raise CertificateLoadError(f"{self.key_file} does not match {self.cert_file}")
        if leaf.not_valid_after_utc <= dt.datetime.now(dt.UTC):
            raise CertificateLoadError(
                f"{self.cert_file}: certificate expired at {leaf.not_valid_after_utc.isoformat()}"
            )
        ctx = _new_server_context(self._minimum_version)
        if self._alpn:
            ctx.set_alpn_protocols(self._alpn)
        try:
            with _pem_paths(cert_pem, key_pem) as (cert_path, key_path):
                ctx.load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, OSError) as exc:
            raise CertificateLoadError(f"{self.cert_file}: rejected by OpenSSL ({exc})") from None
        fingerprint = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
        digest = hashlib.sha256(cert_pem + b"\0" + key_pem).digest()
        return _Loaded(ctx, digest, leaf, fingerprint)

    # ---- reloading ---------------------------------------------------------------------------

    def check(self) -> bool:
        """Re-read the files; swap in the pair if it changed and is valid. True when swapped.

        Content, not mtime, decides: kubelet's atomic Secret updates and ``os.replace`` may keep
        the same mtime granularity, and a few KB read every couple of seconds is negligible.
        """
        with self._lock:
            try:
                return self._check_locked()
            finally:
                self.checks += 1

    def _check_locked(self) -> bool:
        try:
            cert_pem, key_pem = self._read()
        except OSError as exc:
            # Mid-rotation a file can be briefly absent; keep serving and look again next time.
            self._reject(None, f"cannot read certificate/key: {exc}")
            return False
        digest = hashlib.sha256(cert_pem + b"\0" + key_pem).digest()
        if digest == self._current.digest:
            self.last_error = None  # the files are (back to) what is being served
            self._rejected_digest = None
            return False
        if digest == self._rejected_digest:
            return False  # already reported; don't rebuild or log the same bad pair every poll
        try:
            loaded = self._build(cert_pem, key_pem)
        except CertificateLoadError as exc:
            self._reject(digest, str(exc))
            return False
        previous = self._current
        self._current = loaded
        self.reloads += 1
        self.last_error = None
        self._rejected_digest = None
        logger.info(
            "reloaded serving certificate %s (sha256 %s → %s, valid until %s)",
            self.cert_file,
            previous.fingerprint[:16],
            loaded.fingerprint[:16],
            self.not_after.isoformat(),
        )
        return True

    def _reject(self, digest: bytes | None, message: str) -> None:
        if message != self.last_error:
            logger.warning("keeping the current serving certificate (sha256 %s): %s", self.fingerprint[:16], message)
        self.last_error = message
        self._rejected_digest = digest

    async def run(self) -> None:
        """Poll forever (cancel to stop). File reads run in a worker thread to keep the loop free."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # never let the reload task die: the next poll may well succeed
                logger.exception("certificate reload check failed")


class _UvicornServer(uvicorn.Server):
    """uvicorn.Server that leaves signals to TLSServer and reports when it is listening."""

    def __init__(self, config: uvicorn.Config, on_started: Any) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn installs process-wide handlers per server; with two servers in one loop the second
        # would replace the first's and only one server would ever shut down. TLSServer handles them.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    """Bind the listening socket ourselves: port 0 gets a real port before serving starts (no
    free-port race in tests), and a bind error surfaces as an OSError here instead of uvicorn's
    ``sys.exit`` from inside the event loop."""
    if host in ("::", "") and socket.has_dualstack_ipv6():
        return socket.create_server((host, port), family=socket.AF_INET6, backlog=backlog, dualstack_ipv6=True)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return socket.create_server(address[:2], family=family, backlog=backlog)


class TLSServer:
    """Several ASGI apps, one port each, served over HTTPS from one event loop and one reloader.

    ``apps`` is ``[(app, port), …]``; port 0 picks a free port (see :attr:`ports` after
    :meth:`bind`). ``configure_logging=True`` applies uvicorn's default logging config, as the
    ``uvicorn`` command does; pass False when the caller (or a test) configures logging itself.
    """

    def __init__(
        self,
        apps: Sequence[tuple[ASGIApp, int]],
        cert_dir: str | os.PathLike[str],
        *,
        host: str = "0.0.0.0",
        cert_file: str = TLS_CERT_FILE,
        key_file: str = TLS_KEY_FILE,
        reload_interval: float = DEFAULT_RELOAD_INTERVAL,
        graceful_timeout: float | None = DEFAULT_GRACEFUL_TIMEOUT,
        configure_logging: bool = True,
        log_level: str | None = "info",
        access_log: bool = True,
        backlog: int = 2048,
        loop: str = "auto",
    ) -> None:
        if not apps:
            raise ValueError("TLSServer needs at least one (app, port)")
        directory = Path(cert_dir)
        self.host = host
        self.reloader = CertReloader(directory / cert_file, directory / key_file, interval=reload_interval)
        self._requested_ports = [port for _, port in apps]
        self._backlog = backlog
        self._sockets: list[socket.socket] = []
        self._started_count = 0
        self._started = threading.Event()
        self._signals = 0
        self._servers: list[_UvicornServer] = []
        for index, (app, port) in enumerate(apps):
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                ssl_context_factory=self._ssl_context_factory,
                timeout_graceful_shutdown=graceful_timeout,
                # dictConfig once is enough; uvicorn's dict is module-global and mutated, so copy it.
                log_config=copy.deepcopy(uvicorn.config.LOGGING_CONFIG) if configure_logging and index == 0 else None,
                log_level=log_level if configure_logging else None,
                access_log=access_log,
                loop=loop,  # "auto": uvloop when installed, like the uvicorn command
                server_header=False,  # don't advertise the implementation to clients
                proxy_headers=False,  # nothing sits in front of us; never trust X-Forwarded-*
            )
            self._servers.append(_UvicornServer(config, self._on_server_started))

    # ---- lifecycle ---------------------------------------------------------------------------

    def _ssl_context_factory(self, config: uvicorn.Config, _default: Any) -> ssl.SSLContext:
        # uvicorn's own default factory would load the files into a context nobody can reload;
        # ALPN is the one thing the chosen HTTP implementation may need from us.
        self.reloader.set_alpn_protocols(getattr(config.http_protocol_class, "alpn_protocols", None))
        return self.reloader.context

    def _on_server_started(self) -> None:
        self._started_count += 1
        if self._started_count == len(self._servers):
            self._started.set()

    def bind(self) -> list[int]:
        """Open the listening sockets (idempotent); returns the bound ports in ``apps`` order."""
        if not self._sockets:
            try:
                for port in self._requested_ports:
                    self._sockets.append(_bind(self.host, port, self._backlog))
            except OSError:
                self._close_sockets()
                raise
        return self.ports

    @property
    def ports(self) -> list[int]:
        return [sock.getsockname()[1] for sock in self._sockets]

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until every app accepts connections (thread-safe)."""
        return self._started.wait(timeout)

    def request_shutdown(self, *, force: bool = False) -> None:
        """Ask every server to shut down gracefully (``force``: don't wait for in-flight work).

        Thread-safe: uvicorn polls these flags from its main loop.
        """
        for server in self._servers:
            server.should_exit = True
            if force:
                server.force_exit = True

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1 and sig == signal.SIGINT:
            logger.warning("second SIGINT: forcing shutdown")
            self.request_shutdown(force=True)
            return
        logger.info("received %s: shutting down gracefully", sig.name)
        self.request_shutdown()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    async def _serve_one(self, server: _UvicornServer, sock: socket.socket) -> None:
        port = sock.getsockname()[1]
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:
            # uvicorn exits the process when an app's lifespan startup fails; turn that into an
            # error of this server so the others get shut down cleanly first.
            raise RuntimeError(f"server on port {port} failed to start (exit {exc.code})") from None

    async def serve(self, *, install_signal_handlers: bool = True) -> None:
        """Serve until a signal or :meth:`request_shutdown`; if one app stops, all stop."""
        self.bind()
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
                handled.append(sig)
        reload_task = asyncio.create_task(self.reloader.run(), name="qosgate-cert-reload")
        tasks = [
            asyncio.create_task(self._serve_one(server, sock), name=f"qosgate-https-{sock.getsockname()[1]}")
            for server, sock in zip(self._servers, self._sockets, strict=True)
        ]
        for sock in self._sockets:
            host, port = sock.getsockname()[:2]
            logger.info("serving https://%s:%d", host, port)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Reached on a clean stop, when one server failed, or when serve() itself is cancelled:
            # in every case stop the rest gracefully rather than leaving half the apps up.
            self.request_shutdown()
            results = await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
            reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reload_task
            for sig in handled:
                loop.remove_signal_handler(sig)
            self._close_sockets()  # uvicorn closes them in its shutdown, but not after a failed startup
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def run_until_stopped(self, *, install_signal_handlers: bool = True) -> None:
        """Blocking: run :meth:`serve` in a new event loop of the configured ``loop`` kind."""
        with asyncio.Runner(loop_factory=self._servers[0].config.get_loop_factory()) as runner:
            runner.run(self.serve(install_signal_handlers=install_signal_handlers))

    def run(self) -> None:
        """Blocking entry point for the process: serve until SIGTERM/SIGINT."""
        self.run_until_stopped()


def serve(
    apps: Sequence[tuple[ASGIApp, int]],
    cert_dir: str | os.PathLike[str],
    host: str = "0.0.0.0",
    reload_interval: float = DEFAULT_RELOAD_INTERVAL,
    graceful_timeout: float | None = DEFAULT_GRACEFUL_TIMEOUT,
    **kwargs: Any,
) -> None:
    """Serve ``[(app, port), …]`` over HTTPS with certificate hot reload until SIGTERM/SIGINT.

    ``kwargs`` go to :class:`TLSServer` (``cert_file``, ``key_file``, ``configure_logging``,
    ``log_level``, ``access_log``, ``backlog``, ``loop``). Raises :class:`CertificateLoadError` at once if
    the initial pair is unusable and ``OSError`` if a port cannot be bound.
    """
    TLSServer(
        apps, cert_dir, host=host, reload_interval=reload_interval, graceful_timeout=graceful_timeout, **kwargs
    ).run()


def _wait_accepting_tls(host: str, port: int, timeout: float) -> None:
    # "Started" means the loop serves the socket; one unverified handshake proves TLS works end to end.
    probe = ssl.create_default_context()
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    with (
        socket.create_connection((connect_host, port), timeout=timeout) as raw,
        probe.wrap_socket(raw, server_hostname=None),
    ):
        pass


@contextlib.contextmanager
def running_server(
    apps: Sequence[tuple[ASGIApp, int]],
    cert_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 30.0,
    **kwargs: Any,
) -> Iterator[TLSServer]:
    """Run a :class:`TLSServer` in a background thread (tests); yields it once every port accepts TLS.

    Defaults differ from production: loopback, logging left alone, a short graceful timeout so a
    stuck test cannot hang the suite. ``startup_timeout`` only bounds a broken startup.
    """
    kwargs.setdefault("configure_logging", False)
    kwargs.setdefault("access_log", False)
    kwargs.setdefault("graceful_timeout", 5.0)
    server = TLSServer(apps, cert_dir, host=host, **kwargs)
    ports = server.bind()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            server.run_until_stopped(install_signal_handlers=False)
        except BaseException as exc:  # reported to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"qosgate-tls-{ports}", daemon=True)
    thread.start()
    try:
        waited = 0.0
        while not server.wait_started(0.05):
            waited += 0.05
            if not thread.is_alive() or waited >= startup_timeout:
                cause = failure[0] if failure else None
                raise RuntimeError(f"TLS server on ports {ports} did not start") from cause
        for port in ports:
            _wait_accepting_tls(host, port, startup_timeout)
        yield server
    finally:
        server.request_shutdown()
        thread.join()
    # Only reached when neither startup nor the caller's block raised: surface a server crash.
    if failure:
        raise RuntimeError(f"TLS server on ports {ports} failed") from failure[0]


@contextlib.contextmanager
def running_app(
    app: ASGIApp, cert_dir: str | os.PathLike[str], host: str = "127.0.0.1", **kwargs: Any
) -> Iterator[int]:
    """Serve one app over HTTPS in a background thread on a free port; yields the port."""
    with running_server([(app, 0)], cert_dir, host=host, **kwargs) as server:
        yield server.ports[0]
