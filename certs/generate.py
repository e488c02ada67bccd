"""CA + serving certificate for the qosgate webhook and scheduler extender.

kube-apiserver (and kube-scheduler) verify the serving certificate against the ``caBundle`` of the
webhook configuration and the *service DNS name* they dial (``<svc>.<ns>.svc``), using SANs only —
the CN is ignored since Go 1.15. So the leaf carries every name a client might dial, and the CA
certificate is what gets published as ``caBundle``.

Files written into the certificate directory (the names a ``kubernetes.io/tls`` Secret mounts):

- ``ca.crt`` / ``ca.key``: self-signed CA (CA:true, pathlen 0, keyCertSign).
- ``tls.crt`` / ``tls.key``: serving leaf signed by the CA (serverAuth).
- ``client.crt`` / ``client.key``: kube-scheduler's client leaf for the extender's verbs (clientAuth), from
  :func:`issue_client_certificate` / :func:`ensure_client_certificate`.

Every file is written atomically (temp file in the same directory + ``os.replace``) so a reader —
including :mod:`qosgate.serving.tls`'s hot reloader — never sees a truncated file; private keys are
created with mode 0600 before any key byte is written.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import enum
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qosgate.serving.tls import CA_CERT_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, TLS_CERT_FILE, TLS_KEY_FILE

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CLIENT_CERT_FILE",
    "CLIENT_KEY_FILE",
    "DEFAULT_CA_DAYS",
    "DEFAULT_CLIENT_NAME",
    "DEFAULT_RENEW_BEFORE_DAYS",
    "DEFAULT_SERVING_DAYS",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "CertPaths",
    "EnsureAction",
    "EnsureResult",
    "KeyType",
    "atomic_write",
    "ca_bundle_b64",
    "certificate_not_after",
    "certificate_sans",
    "ensure_certificates",
    "ensure_client_certificate",
    "generate_certificates",
    "issue_client_certificate",
    "parse_san",
    "renew_serving_certificate",
    "service_dns_names",
    "tls_secret_manifest",
    "validate_dns_name",
]

CA_KEY_FILE = "ca.key"
DEFAULT_CLIENT_NAME = "qosgate-scheduler"

DEFAULT_CA_DAYS = 3650
DEFAULT_SERVING_DAYS = 365
DEFAULT_RENEW_BEFORE_DAYS = 30
DEFAULT_CLUSTER_DOMAIN = "cluster.local"

# Clocks across a cluster drift; a certificate that becomes valid "now" on this machine could be
# "not yet valid" for an apiserver a few seconds behind, so validity starts a little in the past.
_BACKDATE = dt.timedelta(minutes=5)

KeyType = Literal["ecdsa", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
SAN = x509.DNSName | x509.IPAddress
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 1123 label (what Kubernetes calls a DNS-1123 label); Service names are the stricter RFC 1035
# label (must start with a letter) because they become DNS names in cluster DNS.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class CertPaths:
    """Where the four PEM files of one certificate directory live."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    tls_cert: Path
    tls_key: Path

    @classmethod
    def in_dir(cls, directory: str | os.PathLike[str]) -> CertPaths:
        d = Path(directory)
        return cls(d, d / CA_CERT_FILE, d / CA_KEY_FILE, d / TLS_CERT_FILE, d / TLS_KEY_FILE)


class EnsureAction(enum.StrEnum):
    CREATED = "created"  # nothing usable existed: new CA + serving cert
    REUSED = "reused"  # existing serving cert is valid, covers the names and is not expiring
    RENEWED = "renewed"  # new serving cert issued by the existing CA (caBundle unchanged)
    REGENERATED = "regenerated"  # CA unusable or expiring: new CA + serving cert (caBundle changed)


@dataclass(frozen=True)
class EnsureResult:
    paths: CertPaths
    action: EnsureAction

    @property
    def ca_changed(self) -> bool:
        """Whether the caBundle published to the webhook configurations must be updated."""
        return self.action in (EnsureAction.CREATED, EnsureAction.REGENERATED)


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def validate_dns_name(name: str) -> str:
    """Return ``name`` lower-cased if it is a valid DNS SAN (optionally ``*.``-wildcarded), else raise."""
    candidate = name.strip().lower().rstrip(".")
    labels = candidate.split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]  # a wildcard only as the whole left-most label, like RFC 6125 allows
    if not candidate or len(candidate) > 253 or not labels:
        raise ValueError(f"invalid DNS name {name!r}")
    for label in labels:
        if len(label) > 63 or not _DNS1123_LABEL.fullmatch(label):
            raise ValueError(f"invalid DNS name {name!r}: bad label {label!r}")
    return candidate


def _validate_label(value: str, what: str, pattern: re.Pattern[str]) -> str:
    if len(value) > 63 or not pattern.fullmatch(value):
        first = "a letter" if pattern is _DNS1035_LABEL else "a letter or digit"
        raise ValueError(
            f"invalid {what} {value!r}: must be a lower-case DNS label (a-z, 0-9 and '-', "
            f"at most 63 characters, starting with {first} and ending with a letter or digit)"
        )
    return value


def service_dns_names(service: str, namespace: str, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> list[str]:
    """The names clients dial a Service by; ``<svc>.<ns>.svc`` is the one kube-apiserver uses."""
    _validate_label(service, "service name", _DNS1035_LABEL)
    _validate_label(namespace, "namespace", _DNS1123_LABEL)
    domain = validate_dns_name(cluster_domain)
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{domain}",
    ]


def parse_san(value: str | IPAddress) -> SAN:
    """An IP literal becomes an IP SAN (clients never match IPs against DNS SANs); anything else a DNS SAN."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return x509.IPAddress(value)
    try:
        return x509.IPAddress(ipaddress.ip_address(value.strip()))
    except ValueError:
        return x509.DNSName(validate_dns_name(value))


def _required_sans(
    service: str, namespace: str, extra_sans: Iterable[str | IPAddress], cluster_domain: str
) -> list[SAN]:
    sans: list[SAN] = [x509.DNSName(n) for n in service_dns_names(service, namespace, cluster_domain)]
    sans += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    sans += [parse_san(v) for v in extra_sans]
    unique: list[SAN] = []
    for san in sans:  # keep the order (first DNS name first) but drop duplicates
        if san not in unique:
            unique.append(san)
    return unique


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new content, never a mix.

    The temp file lives in the target directory (``os.replace`` is only atomic within one file
    system) and gets its final mode *before* data is written, so key material is never readable
    by others even for an instant.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Persist the rename itself; without this a crash can leave the old directory entry.
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_cert(path: Path) -> x509.Certificate:
    # A tls.crt may carry the chain after the leaf; the leaf is always first.
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def _load_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def _spki(key: Any) -> bytes:
    spki: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return spki


def certificate_not_after(path: str | os.PathLike[str]) -> dt.datetime:
    """notAfter (timezone-aware UTC) of the first certificate in a PEM file."""
    return _load_cert(Path(path)).not_valid_after_utc


def certificate_sans(path: str | os.PathLike[str]) -> tuple[list[str], list[IPAddress]]:
    """(DNS names, IP addresses) of the first certificate in a PEM file."""
    cert = _load_cert(Path(path))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    addresses = [a for a in san.get_values_for_type(x509.IPAddress)
                 if isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address)]  # a SAN never holds a network
    return san.get_values_for_type(x509.DNSName), addresses


def ca_bundle_b64(cert_dir: str | os.PathLike[str]) -> str:
    """base64 of ``ca.crt``'s PEM: the value of ``caBundle`` in webhook configurations / extender caData."""
    return base64.b64encode(CertPaths.in_dir(cert_dir).ca_cert.read_bytes()).decode("ascii")


def tls_secret_manifest(
    cert_dir: str | os.PathLike[str],
    name: str,
    namespace: str,
    *,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``kubernetes.io/tls`` Secret carrying tls.crt, tls.key and ca.crt.

    ca.key is deliberately left out: the cluster only needs to *serve* with the leaf; keeping the
    CA key off the cluster means a leaked Secret cannot mint certificates for other services.
    """
    paths = CertPaths.in_dir(cert_dir)

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode("ascii")

    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": b64(paths.tls_cert),
            "tls.key": b64(paths.tls_key),
            "ca.crt": b64(paths.ca_cert),
        },
    }


# --------------------------------------------------------------------------------------------
# Issuing
# --------------------------------------------------------------------------------------------


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r} (expected 'ecdsa' or 'rsa')")


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(dt.UTC)


def _check_days(days: int, what: str) -> None:
    if days < 1:
        raise ValueError(f"{what} must be at least 1 day, got {days}")


def _make_ca(
    service: str, namespace: str, days: int, key_type: KeyType, now: dt.datetime
) -> tuple[x509.Certificate, PrivateKey]:
    key = _new_key(key_type)
    # A unique-ish subject per deployment keeps CAs of different installs distinguishable in logs.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qosgate"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"qosgate CA {service}.{namespace}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    subject: x509.Name,
    sans: Sequence[SAN],
    usage: x509.ObjectIdentifier,
    days: int,
    key_type: KeyType,
    now: dt.datetime,
) -> tuple[x509.Certificate, PrivateKey]:
    key = _new_key(key_type)
    # A leaf must not outlive its issuer: chain validation would fail from the CA's expiry onward
    # while our expiry checks still believed the leaf good.
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # RSA key exchange (TLS 1.2 non-ECDHE suites) encrypts to the key; ECDSA never does.
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _make_serving(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    sans: Sequence[SAN],
    days: int,
    key_type: KeyType,
    now: dt.datetime,
) -> tuple[x509.Certificate, PrivateKey]:
    first_dns = next(s.value for s in sans if isinstance(s, x509.DNSName))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first_dns)])
    return _make_leaf(ca_cert, ca_key, subject, sans, ExtendedKeyUsageOID.SERVER_AUTH, days, key_type, now)


def _write_serving(paths: CertPaths, cert: x509.Certificate, key: PrivateKey) -> None:
    # Key first: a reader that sees the new key with the old cert gets a mismatch and retries,
    # which the hot reloader handles; both orders leave such a window, so pick one and document it.
    atomic_write(paths.tls_key, _key_pem(key), 0o600)
    atomic_write(paths.tls_cert, _cert_pem(cert), 0o644)


def _prepare_dir(out_dir: str | os.PathLike[str]) -> CertPaths:
    paths = CertPaths.in_dir(out_dir)
    # 0700 for a directory we create: it will hold private keys.
    paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return paths


def generate_certificates(
    out_dir: str | os.PathLike[str],
    service: str,
    namespace: str,
    extra_sans: Iterable[str | IPAddress] = (),
    *,
    ca_days: int = DEFAULT_CA_DAYS,
    days: int = DEFAULT_SERVING_DAYS,
    key_type: KeyType = "ecdsa",
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    now: dt.datetime | None = None,
) -> CertPaths:
    """Create a fresh CA and serving certificate in ``out_dir`` (overwriting any existing set).

    ``extra_sans`` entries that parse as IP addresses become IP SANs, the rest DNS SANs.
    Raises ``ValueError`` for bad names/days and ``OSError`` when the directory is unusable.
    """
    _check_days(ca_days, "CA validity")
    _check_days(days, "serving certificate validity")
    sans = _required_sans(service, namespace, extra_sans, cluster_domain)
    moment = _now(now)
    ca_cert, ca_key = _make_ca(service, namespace, ca_days, key_type, moment)
    cert, key = _make_serving(ca_cert, ca_key, sans, days, key_type, moment)
    paths = _prepare_dir(out_dir)
    atomic_write(paths.ca_key, _key_pem(ca_key), 0o600)
    atomic_write(paths.ca_cert, _cert_pem(ca_cert), 0o644)
    _write_serving(paths, cert, key)
    return paths


def renew_serving_certificate(
    cert_dir: str | os.PathLike[str],
    service: str,
    namespace: str,
    extra_sans: Iterable[str | IPAddress] = (),
    *,
    days: int = DEFAULT_SERVING_DAYS,
    key_type: KeyType = "ecdsa",
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    now: dt.datetime | None = None,
) -> CertPaths:
    """Issue a new serving certificate (new key) from the CA already in ``cert_dir``.

    The caBundle stays the same, so nothing in the cluster needs updating. Raises ``ValueError``
    when the CA files are missing, unparseable or not a matching CA pair.
    """
    _check_days(days, "serving certificate validity")
    sans = _required_sans(service, namespace, extra_sans, cluster_domain)
    paths = CertPaths.in_dir(cert_dir)
    ca_cert, ca_key = _load_ca(paths)
    cert, key = _make_serving(ca_cert, ca_key, sans, days, key_type, _now(now))
    _write_serving(paths, cert, key)
    return paths


def _load_ca(paths: CertPaths) -> tuple[x509.Certificate, PrivateKey]:
    try:
        ca_cert = _load_cert(paths.ca_cert)
        ca_key = _load_key(paths.ca_key)
    except (OSError, ValueError) as exc:
        raise ValueError(f"no usable CA in {paths.directory}: {exc}") from exc
    if _spki(ca_cert.public_key()) != _spki(ca_key.public_key()):
        raise ValueError(f"{paths.ca_key} does not belong to {paths.ca_cert}")
    try:
        is_ca = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError(f"{paths.ca_cert} is not a CA certificate")
    return ca_cert, ca_key


def _valid_until(cert: x509.Certificate, now: dt.datetime, margin: dt.timedelta) -> bool:
    return cert.not_valid_before_utc <= now + _BACKDATE and cert.not_valid_after_utc > now + margin


def _serving_reusable(paths: CertPaths, required: Sequence[SAN], now: dt.datetime, margin: dt.timedelta) -> bool:
    try:
        ca_cert = _load_cert(paths.ca_cert)
        leaf = _load_cert(paths.tls_cert)
        key = _load_key(paths.tls_key)
        leaf.verify_directly_issued_by(ca_cert)  # signature + issuer name: the caBundle still fits
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    return (
        _spki(leaf.public_key()) == _spki(key.public_key())
        and all(s in san for s in required)  # e.g. a --dns added since the cert was issued
        and _valid_until(leaf, now, margin)
        and _valid_until(ca_cert, now, margin)
    )


def ensure_certificates(
    cert_dir: str | os.PathLike[str],
    service: str,
    namespace: str,
    extra_sans: Iterable[str | IPAddress] = (),
    *,
    renew_before_days: int = DEFAULT_RENEW_BEFORE_DAYS,
    ca_days: int = DEFAULT_CA_DAYS,
    days: int = DEFAULT_SERVING_DAYS,
    key_type: KeyType = "ecdsa",
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    now: dt.datetime | None = None,
) -> EnsureResult:
    """Make ``cert_dir`` hold a usable set, touching as little as possible.

    1. serving cert valid for more than ``renew_before_days``, chained to ca.crt, matching its key
       and covering every requested name → reused as is;
    2. otherwise, if the CA pair is usable and not itself expiring → new serving cert from it
       (caBundle unchanged);
    3. otherwise → new CA and serving cert (``result.ca_changed``: republish the caBundle).
    """
    _check_days(ca_days, "CA validity")
    _check_days(days, "serving certificate validity")
    if renew_before_days < 0:
        raise ValueError(f"renew-before must not be negative, got {renew_before_days}")
    extra = list(extra_sans)  # used twice below; a generator would be empty the second time
    required = _required_sans(service, namespace, extra, cluster_domain)
    moment = _now(now)
    margin = dt.timedelta(days=renew_before_days)
    paths = CertPaths.in_dir(cert_dir)
    if _serving_reusable(paths, required, moment, margin):
        return EnsureResult(paths, EnsureAction.REUSED)
    try:
        ca_cert, _ = _load_ca(paths)
        ca_usable = _valid_until(ca_cert, moment, margin)
    except ValueError:
        ca_usable = False
    if ca_usable:
        renew_serving_certificate(
            cert_dir,
            service,
            namespace,
            extra,
            days=days,
            key_type=key_type,
            cluster_domain=cluster_domain,
            now=moment,
        )
        return EnsureResult(paths, EnsureAction.RENEWED)
    existed = any(p.exists() for p in (paths.ca_cert, paths.ca_key, paths.tls_cert, paths.tls_key))
    generate_certificates(
        cert_dir,
        service,
        namespace,
        extra,
        ca_days=ca_days,
        days=days,
        key_type=key_type,
        cluster_domain=cluster_domain,
        now=moment,
    )
    return EnsureResult(paths, EnsureAction.REGENERATED if existed else EnsureAction.CREATED)


def issue_client_certificate(
    cert_dir: str | os.PathLike[str],
    common_name: str = DEFAULT_CLIENT_NAME,
    *,
    days: int = DEFAULT_SERVING_DAYS,
    key_type: KeyType = "ecdsa",
    now: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """Issue a TLS client certificate from the CA in ``cert_dir`` (for kube-scheduler → extender).

    Written as ``client.crt`` / ``client.key`` next to the CA; returns their paths. Raises ``ValueError``
    when the CA is missing or unusable.
    """
    _check_days(days, "client certificate validity")
    if not common_name or len(common_name) > 64:
        raise ValueError("client certificate common name must be 1-64 characters")
    paths = CertPaths.in_dir(cert_dir)
    ca_cert, ca_key = _load_ca(paths)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qosgate"),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert, key = _make_leaf(ca_cert, ca_key, subject, (), ExtendedKeyUsageOID.CLIENT_AUTH, days, key_type,
                           _now(now))
    cert_path, key_path = paths.directory / CLIENT_CERT_FILE, paths.directory / CLIENT_KEY_FILE
    atomic_write(key_path, _key_pem(key), 0o600)
    atomic_write(cert_path, _cert_pem(cert), 0o644)
    return cert_path, key_path


def ensure_client_certificate(
    cert_dir: str | os.PathLike[str],
    common_name: str = DEFAULT_CLIENT_NAME,
    *,
    renew_before_days: int = DEFAULT_RENEW_BEFORE_DAYS,
    days: int = DEFAULT_SERVING_DAYS,
    key_type: KeyType = "ecdsa",
    now: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """Keep a client pair issued by ``cert_dir``'s CA that is valid beyond ``renew_before_days``; a new one
    lasts ``days`` with a ``key_type`` key."""
    paths = CertPaths.in_dir(cert_dir)
    cert_path, key_path = paths.directory / CLIENT_CERT_FILE, paths.directory / CLIENT_KEY_FILE
    moment, margin = _now(now), dt.timedelta(days=renew_before_days)
    try:
        leaf, key, ca_cert = _load_cert(cert_path), _load_key(key_path), _load_cert(paths.ca_cert)
        leaf.verify_directly_issued_by(ca_cert)
        if _spki(leaf.public_key()) == _spki(key.public_key()) and _valid_until(leaf, moment, margin):
            return cert_path, key_path
    except (OSError, ValueError, TypeError, InvalidSignature):
        pass
    return issue_client_certificate(cert_dir, common_name, days=days, key_type=key_type, now=now)
