"""TLS for every HTTPS listener: hardened contexts and a certificate that reloads when its files change.

The serving certificate is rotated underneath a running process (cert-manager renewing the Secret,
``qosgate certs ensure`` in a CronJob, the kubelet swapping the Secret volume's ``..data`` symlink), so the
server is handed one long-lived *listening* context whose ``sni_callback`` — which OpenSSL calls for every
ClientHello, with or without SNI — points each new connection at the *current serving* context.

- A reload builds a complete new serving context from the exact bytes read (validated: PEM parses, key
  matches the leaf, leaf not expired, OpenSSL accepts the pair) and then swaps one reference. Handshakes
  see either the old or the new pair, never a mix; established connections keep what they negotiated.
- Calling ``load_cert_chain`` on the live context instead would be neither atomic nor complete: OpenSSL
  replaces the certificate before checking the key (a mismatching key leaves the context with *no* usable
  key), and it keeps one certificate per key algorithm, so RSA → ECDSA would keep serving the old RSA one.
- A bad or half-written pair (cert replaced, key not yet) is logged once and the old pair keeps serving.
- Policy (architecture §3.3): TLS 1.2 at least; on TLS 1.2 only ECDHE key exchange with AEAD ciphers
  (AES-GCM, ChaCha20-Poly1305) — TLS 1.3 suites are AEAD by definition; ALPN offers only ``http/1.1``.
- Only the standard library: the leaf's validity comes from a few lines of DER reading, the key check from
  OpenSSL itself (``load_cert_chain`` refuses a key that does not match), so serving needs no ``cryptography``.
- Client authentication (the extender's callers): with ``client_ca_file`` every context asks for a client
  certificate and verifies it against that CA; a connection without one still completes the handshake, and
  the routes that require one refuse it with 401 (health checks need none). The client CA reloads with the
  pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import ssl
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CA_CERT_FILE",
    "CLIENT_CERT_FILE",
    "CLIENT_KEY_FILE",
    "DEFAULT_RELOAD_INTERVAL",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "CertReloader",
    "CertificateLoadError",
    "certificate_validity",
]

logger = logging.getLogger("qosgate.serving.tls")

# The file names of a kubernetes.io/tls Secret mounted as a volume (plus cert-manager's ca.crt).
CA_CERT_FILE = "ca.crt"
TLS_CERT_FILE = "tls.crt"
TLS_KEY_FILE = "tls.key"
# kube-scheduler's client certificate for the extender (KubeSchedulerConfiguration tlsConfig.certFile/keyFile),
# which `qosgate certs` writes next to them.
CLIENT_CERT_FILE = "client.crt"
CLIENT_KEY_FILE = "client.key"
DEFAULT_RELOAD_INTERVAL = 2.0


class CertificateLoadError(Exception):
    """The certificate/key pair on disk cannot be served."""


@dataclass(frozen=True)
class _Loaded:
    """One validated certificate/key pair and the serving context built from it."""

    context: ssl.SSLContext
    digest: bytes  # of the raw cert + key bytes, to notice changes without re-parsing
    der: bytes  # the leaf certificate
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str  # SHA-256 of the leaf's DER, hex


# OpenSSL cipher string for TLS 1.2: forward-secret key exchange with AEAD ciphers only (no CBC, no RSA kx).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
ALPN_PROTOCOLS = ("http/1.1",)  # listeners opt in to HTTP/2 with CertReloader(alpn=http2.H2_ALPN)


def _new_server_context(minimum_version: ssl.TLSVersion, client_ca: bytes | None = None,
                        alpn: Sequence[str] = ALPN_PROTOCOLS) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # PROTOCOL_TLS_SERVER already defaults to 1.2, but the floor is a policy, so state it.
    ctx.minimum_version = minimum_version
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols(list(alpn))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if client_ca is not None:
        ctx.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
        ctx.verify_mode = ssl.CERT_OPTIONAL
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


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL)
_PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL)


def _der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, first content byte, end) of the DER element at `offset`."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length, start = data[offset], data[offset + 1], offset + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or start + count > len(data):
            raise ValueError("bad DER length")
        length, start = int.from_bytes(data[start : start + count], "big"), start + count
    if start + length > len(data):
        raise ValueError("truncated DER")
    return tag, start, start + length


def _der_time(tag: int, raw: bytes) -> dt.datetime:
    text = raw.decode("ascii")
    if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ: RFC 5280 maps YY < 50 to 20YY
        moment = dt.datetime.strptime(text, "%y%m%d%H%M%SZ")
        moment = moment.replace(year=moment.year % 100 + (2000 if moment.year % 100 < 50 else 1900))
    elif tag == 0x18:  # GeneralizedTime, YYYYMMDDHHMMSSZ
        moment = dt.datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"unexpected DER tag {tag:#x} for a time")
    return moment.replace(tzinfo=dt.UTC)


def certificate_validity(der: bytes) -> tuple[dt.datetime, dt.datetime]:
    """(notBefore, notAfter) of a DER X.509 certificate, in UTC; ValueError when it is not one.

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
    issuer, validity SEQUENCE { notBefore, notAfter }, … }, … } (RFC 5280 §4.1).
    """
    try:
        tag, start, _ = _der_element(der, 0)
        if tag != 0x30:
            raise ValueError("not a DER SEQUENCE")
        tag, position, _ = _der_element(der, start)
        if tag != 0x30:
            raise ValueError("no tbsCertificate")
        tag, _, end = _der_element(der, position)
        if tag == 0xA0:  # explicit version
            tag, _, end = _der_element(der, end)
        for expected in (0x02, 0x30, 0x30):  # serialNumber, signature, issuer
            if tag != expected:
                raise ValueError("unexpected tbsCertificate layout")
            tag, position, end = _der_element(der, end)
        if tag != 0x30:
            raise ValueError("no validity")
        tag, first, after = _der_element(der, position)
        not_before = _der_time(tag, der[first:after])
        tag, first, after = _der_element(der, after)
        return not_before, _der_time(tag, der[first:after])
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed certificate: {exc}") from None


def _refuse_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise CertificateLoadError("the key is encrypted")


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
        client_ca_file: str | os.PathLike[str] | None = None,
        alpn: Sequence[str] = ALPN_PROTOCOLS,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"reload interval must be positive, got {interval}")
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.client_ca_file = Path(client_ca_file) if client_ca_file is not None else None
        self.interval = interval
        self._minimum_version = minimum_version
        self._alpn = tuple(alpn)
        self._lock = threading.Lock()  # serialises check() between the poll task and manual callers
        self.reloads = 0  # successful swaps after the initial load
        self.checks = 0  # completed checks, successful or not
        self.last_error: str | None = None  # why the newest pair on disk was rejected, if it was
        self._rejected_digest: bytes | None = None
        try:
            cert_pem, key_pem, client_ca = self._read()
        except OSError as exc:
            raise CertificateLoadError(f"cannot read certificate/key: {exc}") from exc
        self._current = self._build(cert_pem, key_pem, client_ca)
        # The listening context never carries a certificate: every handshake is redirected to the
        # current serving context, so a handshake that somehow skipped the callback fails closed
        # rather than silently serving a stale certificate. It asks for client certificates like the
        # serving contexts do: OpenSSL takes the verify mode from the context the connection started on.
        self.context = _new_server_context(minimum_version, client_ca, self._alpn)
        self.context.sni_callback = self._select_context
        logger.info(
            "serving certificate %s (sha256 %s, valid until %s)",
            self.cert_file,
            self.fingerprint[:16],
            self.not_after.isoformat(),
        )

    # ---- state -------------------------------------------------------------------------------

    @property
    def certificate_der(self) -> bytes:
        """The leaf certificate new handshakes get, DER-encoded."""
        return self._current.der

    @property
    def not_after(self) -> dt.datetime:
        """notAfter of the certificate new handshakes get (UTC, aware) — for an expiry gauge."""
        return self._current.not_after

    @property
    def fingerprint(self) -> str:
        return self._current.fingerprint

    def is_valid(self, now: dt.datetime | None = None) -> bool:
        """Whether the certificate being served is inside its validity window — for /readyz."""
        moment = now or dt.datetime.now(dt.UTC)
        return self._current.not_before <= moment < self._current.not_after

    # ---- TLS plumbing ------------------------------------------------------------------------

    def _select_context(self, ssl_obj: Any, server_name: str | None, _listening: ssl.SSLContext) -> None:
        # Runs inside OpenSSL's ClientHello processing; keep it trivial — an exception here would
        # abort the handshake. Reading one attribute is atomic, so no lock is needed.
        ssl_obj.context = self._current.context

    def _read(self) -> tuple[bytes, bytes, bytes | None]:
        client_ca = self.client_ca_file.read_bytes() if self.client_ca_file is not None else None
        return self.cert_file.read_bytes(), self.key_file.read_bytes(), client_ca

    @staticmethod
    def _digest(cert_pem: bytes, key_pem: bytes, client_ca: bytes | None) -> bytes:
        return hashlib.sha256(cert_pem + b"\0" + key_pem + b"\0" + (client_ca or b"")).digest()

    def _build(self, cert_pem: bytes, key_pem: bytes, client_ca: bytes | None) -> _Loaded:
        """Validate a pair and build its serving context; raise CertificateLoadError naming the problem."""
        blocks = _PEM_CERTIFICATE.findall(cert_pem)
        if not blocks:
            raise CertificateLoadError(f"{self.cert_file}: no valid PEM certificate (no complete CERTIFICATE block)")
        try:
            chain = [block.decode("ascii") for block in blocks]
            der = ssl.PEM_cert_to_DER_cert(chain[0])
            not_before, not_after = certificate_validity(der)
            # OpenSSL parses every certificate of the chain (a leaf is stored like any other certificate).
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata="\n".join(chain))
        except (ValueError, ssl.SSLError) as exc:
            raise CertificateLoadError(f"{self.cert_file}: no valid PEM certificate ({exc})") from None
        key_block = _PEM_PRIVATE_KEY.search(key_pem)
        if key_block is None:
            raise CertificateLoadError(f"{self.key_file}: no valid unencrypted PEM private key (no PRIVATE KEY block)")
        if key_block.group(1) == b"ENCRYPTED " or b"Proc-Type: 4,ENCRYPTED" in key_block.group(0):
            raise CertificateLoadError(f"{self.key_file}: no valid unencrypted PEM private key (it is encrypted)")
        try:
            ctx = _new_server_context(self._minimum_version, client_ca, self._alpn)
        except (ssl.SSLError, ValueError) as exc:
            raise CertificateLoadError(f"{self.client_ca_file}: no usable client CA ({exc})") from None
        try:
            with _pem_paths(cert_pem, key_pem) as (cert_path, key_path):
                ctx.load_cert_chain(cert_path, key_path, password=_refuse_password)
        except CertificateLoadError as exc:
            raise CertificateLoadError(f"{self.key_file}: no valid unencrypted PEM private key ({exc})") from None
        except ssl.SSLError as exc:
            if exc.reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
                # NO_CERTIFICATE_ASSIGNED: the key's algorithm is not the certificate's (an EC key, RSA cert).
                raise CertificateLoadError(f"{self.key_file} does not match {self.cert_file}") from None
            if exc.reason is None:  # "PEM lib": the certificates parsed above, so the key did not
                raise CertificateLoadError(f"{self.key_file}: no valid unencrypted PEM private key ({exc})") from None
            raise CertificateLoadError(f"{self.cert_file}: rejected by OpenSSL ({exc})") from None
        except OSError as exc:
            raise CertificateLoadError(f"{self.cert_file}: rejected by OpenSSL ({exc})") from None
        if not_after <= dt.datetime.now(dt.UTC):
            raise CertificateLoadError(f"{self.cert_file}: certificate expired at {not_after.isoformat()}")
        fingerprint = hashlib.sha256(der).hexdigest()
        return _Loaded(ctx, self._digest(cert_pem, key_pem, client_ca), der, not_before, not_after, fingerprint)

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
            cert_pem, key_pem, client_ca = self._read()
        except OSError as exc:
            # Mid-rotation a file can be briefly absent; keep serving and look again next time.
            self._reject(None, f"cannot read certificate/key: {exc}")
            return False
        digest = self._digest(cert_pem, key_pem, client_ca)
        if digest == self._current.digest:
            self.last_error = None  # the files are (back to) what is being served
            self._rejected_digest = None
            return False
        if digest == self._rejected_digest:
            return False  # already reported; don't rebuild or log the same bad pair every poll
        try:
            loaded = self._build(cert_pem, key_pem, client_ca)
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
