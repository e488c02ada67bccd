"""qosgate.certs.generate: what kube-apiserver will check (SANs, chain, EKU), file hygiene, ensure/renew."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from hypothesis import given
from hypothesis import strategies as st

from qosgate.certs import generate as gen
from qosgate.certs.generate import (
    CertPaths,
    EnsureAction,
    atomic_write,
    ca_bundle_b64,
    certificate_not_after,
    certificate_sans,
    ensure_certificates,
    generate_certificates,
    parse_san,
    renew_serving_certificate,
    tls_secret_manifest,
    validate_dns_name,
)

SVC, NS = "qosgate-webhook", "qosgate-system"
SERVICE_NAMES = [SVC, f"{SVC}.{NS}", f"{SVC}.{NS}.svc", f"{SVC}.{NS}.svc.cluster.local"]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def server_verifier(ca: x509.Certificate, name: x509.DNSName | x509.IPAddress, at: dt.datetime | None = None):
    # cryptography's RFC 5280 / CA/B-style path validation: chain, SAN match, serverAuth EKU, CA flags.
    builder = PolicyBuilder().store(Store([ca]))
    if at is not None:
        builder = builder.time(at)
    return builder.build_server_verifier(name)


@pytest.fixture
def certs(tmp_path: Path) -> CertPaths:
    return generate_certificates(tmp_path / "out", SVC, NS, ["extra.example.com", "10.0.0.7", "fd00::1"])


def test_serving_certificate_has_every_service_name_and_extra_sans(certs: CertPaths) -> None:
    dns, ips = certificate_sans(certs.tls_cert)
    assert dns == [*SERVICE_NAMES, "localhost", "extra.example.com"]
    assert ips == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("fd00::1"),
    ]


def test_chain_verifies_for_each_name_a_client_may_dial(certs: CertPaths) -> None:
    ca, leaf = load(certs.ca_cert), load(certs.tls_cert)
    names: list[x509.DNSName | x509.IPAddress] = [x509.DNSName(n) for n in [*SERVICE_NAMES, "localhost"]]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "10.0.0.7", "fd00::1")]
    for name in names:
        chain = server_verifier(ca, name).verify(leaf, [])
        assert chain[-1] == ca
    with pytest.raises(VerificationError):
        server_verifier(ca, x509.DNSName("other.qosgate-system.svc")).verify(leaf, [])


def test_certificate_profiles(certs: CertPaths) -> None:
    ca, leaf = load(certs.ca_cert), load(certs.tls_cert)
    ca_bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_bc.critical and ca_bc.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.subject == ca.issuer
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)


def test_default_validity_ca_ten_years_serving_one_year(tmp_path: Path) -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    paths = generate_certificates(tmp_path, SVC, NS, now=now)
    assert certificate_not_after(paths.ca_cert) == now + dt.timedelta(days=3650)
    assert certificate_not_after(paths.tls_cert) == now + dt.timedelta(days=365)
    assert load(paths.tls_cert).not_valid_before_utc < now  # backdated for clock skew


def test_validity_is_configurable_and_leaf_never_outlives_the_ca(tmp_path: Path) -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    paths = generate_certificates(tmp_path, SVC, NS, ca_days=10, days=400, now=now)
    assert certificate_not_after(paths.ca_cert) == now + dt.timedelta(days=10)
    assert certificate_not_after(paths.tls_cert) == certificate_not_after(paths.ca_cert)


def test_rsa_keys(tmp_path: Path) -> None:
    paths = generate_certificates(tmp_path, SVC, NS, key_type="rsa")
    leaf = load(paths.tls_cert)
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)
    assert leaf.public_key().key_size == 2048
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    server_verifier(load(paths.ca_cert), x509.DNSName(f"{SVC}.{NS}.svc")).verify(leaf, [])


def test_key_files_are_0600_and_certificates_0644_regardless_of_umask(tmp_path: Path) -> None:
    old = os.umask(0)  # the most permissive umask must not widen key permissions
    try:
        paths = generate_certificates(tmp_path / "d", SVC, NS)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths.directory.iterdir()}
    assert modes == {"ca.key": 0o600, "tls.key": 0o600, "ca.crt": 0o644, "tls.crt": 0o644}
    assert stat.S_IMODE(paths.directory.stat().st_mode) == 0o700


def test_files_are_replaced_not_rewritten_and_no_temp_files_remain(certs: CertPaths) -> None:
    inode_before = certs.tls_cert.stat().st_ino
    renew_serving_certificate(certs.directory, SVC, NS)
    # A new inode means os.replace: an open reader of the old file keeps reading complete old content.
    assert certs.tls_cert.stat().st_ino != inode_before
    assert sorted(p.name for p in certs.directory.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]


def test_atomic_write_failure_keeps_old_content_and_cleans_up(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "tls.key"
    atomic_write(target, b"old", 0o600)

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gen.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, b"new", 0o600)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["tls.key"]


def test_ca_bundle_is_base64_of_the_ca_pem(certs: CertPaths) -> None:
    decoded = base64.b64decode(ca_bundle_b64(certs.directory), validate=True)
    assert decoded == certs.ca_cert.read_bytes()
    assert x509.load_pem_x509_certificate(decoded) == load(certs.ca_cert)


def test_tls_secret_manifest(certs: CertPaths) -> None:
    manifest = tls_secret_manifest(certs.directory, "qosgate-webhook-tls", NS, labels={"app": "qosgate"})
    assert manifest["apiVersion"] == "v1" and manifest["kind"] == "Secret"
    assert manifest["type"] == "kubernetes.io/tls"
    assert manifest["metadata"] == {"name": "qosgate-webhook-tls", "namespace": NS, "labels": {"app": "qosgate"}}
    data = {k: base64.b64decode(v) for k, v in manifest["data"].items()}
    assert data == {
        "tls.crt": certs.tls_cert.read_bytes(),
        "tls.key": certs.tls_key.read_bytes(),
        "ca.crt": certs.ca_cert.read_bytes(),
    }  # and never ca.key


@pytest.mark.parametrize(
    ("service", "namespace", "extra", "message"),
    [
        ("Qosgate", NS, [], "service name"),
        ("1webhook", NS, [], "service name"),  # Services are RFC 1035 labels: must start with a letter
        (SVC, "bad_ns", [], "namespace"),
        (SVC, NS, ["not a name"], "DNS name"),
        (SVC, NS, ["a..b"], "DNS name"),
        (SVC, NS, ["x" * 64 + ".example"], "DNS name"),
    ],
)
def test_bad_names_are_rejected(tmp_path: Path, service: str, namespace: str, extra: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_certificates(tmp_path / "d", service, namespace, extra)
    assert not (tmp_path / "d").exists()  # validation happens before anything is written


def test_bad_days_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1 day"):
        generate_certificates(tmp_path, SVC, NS, days=0)


@given(st.ip_addresses())
def test_ip_literals_become_ip_sans(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert parse_san(str(address)) == x509.IPAddress(address)


_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@given(st.lists(_label, min_size=1, max_size=5), st.booleans())
def test_valid_dns_names_round_trip(labels: list[str], wildcard: bool) -> None:
    name = ".".join(["*", *labels] if wildcard else labels)
    try:
        ipaddress.ip_address(name)
    except ValueError:
        assert parse_san(name) == x509.DNSName(name)
        assert validate_dns_name(name.upper()) == name


# ---- ensure_certificates --------------------------------------------------------------------


def fingerprint(path: Path) -> bytes:
    return load(path).fingerprint(hashes.SHA256())


def test_ensure_creates_then_reuses_without_touching_files(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path / "d", SVC, NS)
    assert first.action is EnsureAction.CREATED and first.ca_changed
    stats = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.paths.directory.iterdir()}
    again = ensure_certificates(tmp_path / "d", SVC, NS)
    assert again.action is EnsureAction.REUSED and not again.ca_changed
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in again.paths.directory.iterdir()} == stats


def test_ensure_renews_an_expiring_serving_cert_from_the_existing_ca(tmp_path: Path) -> None:
    paths = generate_certificates(tmp_path, SVC, NS)
    ca_before, leaf_before = fingerprint(paths.ca_cert), fingerprint(paths.tls_cert)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)  # 25 days left < 30 days renew-before
    result = ensure_certificates(tmp_path, SVC, NS, now=later)
    assert result.action is EnsureAction.RENEWED and not result.ca_changed
    assert fingerprint(paths.ca_cert) == ca_before
    assert fingerprint(paths.tls_cert) != leaf_before
    leaf = load(paths.tls_cert)
    server_verifier(load(paths.ca_cert), x509.DNSName(f"{SVC}.{NS}.svc"), at=later).verify(leaf, [])
    assert leaf.not_valid_after_utc > later + dt.timedelta(days=300)


def test_ensure_respects_renew_before_days(tmp_path: Path) -> None:
    generate_certificates(tmp_path, SVC, NS, days=20)
    assert ensure_certificates(tmp_path, SVC, NS, renew_before_days=10).action is EnsureAction.REUSED
    assert ensure_certificates(tmp_path, SVC, NS, renew_before_days=30).action is EnsureAction.RENEWED


def test_ensure_renews_when_a_requested_name_is_missing(tmp_path: Path) -> None:
    paths = generate_certificates(tmp_path, SVC, NS)
    result = ensure_certificates(tmp_path, SVC, NS, ["qosgate-extender.qosgate-system.svc", "10.1.2.3"])
    assert result.action is EnsureAction.RENEWED
    dns, ips = certificate_sans(paths.tls_cert)
    assert "qosgate-extender.qosgate-system.svc" in dns and ipaddress.ip_address("10.1.2.3") in ips
    assert ensure_certificates(tmp_path, SVC, NS, ["10.1.2.3"]).action is EnsureAction.REUSED


def test_ensure_renews_a_damaged_or_foreign_serving_cert(tmp_path: Path) -> None:
    paths = generate_certificates(tmp_path / "a", SVC, NS)
    other = generate_certificates(tmp_path / "b", SVC, NS)
    paths.tls_cert.write_bytes(other.tls_cert.read_bytes())  # signed by another CA
    paths.tls_key.write_bytes(other.tls_key.read_bytes())
    assert ensure_certificates(paths.directory, SVC, NS).action is EnsureAction.RENEWED
    load(paths.tls_cert).verify_directly_issued_by(load(paths.ca_cert))
    paths.tls_cert.write_bytes(b"garbage")
    assert ensure_certificates(paths.directory, SVC, NS).action is EnsureAction.RENEWED
    paths.tls_key.write_bytes(other.tls_key.read_bytes())  # key no longer matches the leaf
    assert ensure_certificates(paths.directory, SVC, NS).action is EnsureAction.RENEWED


def test_ensure_regenerates_everything_when_the_ca_is_expiring(tmp_path: Path) -> None:
    paths = generate_certificates(tmp_path, SVC, NS, ca_days=40, days=30)
    ca_before = fingerprint(paths.ca_cert)
    result = ensure_certificates(tmp_path, SVC, NS, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=15))
    assert result.action is EnsureAction.REGENERATED and result.ca_changed
    assert fingerprint(paths.ca_cert) != ca_before


def test_ensure_without_ca_key_reuses_a_valid_leaf_but_regenerates_an_expiring_one(tmp_path: Path) -> None:
    # In-cluster the Secret carries ca.crt, tls.crt and tls.key but no ca.key.
    paths = generate_certificates(tmp_path, SVC, NS, days=20)
    paths.ca_key.unlink()
    assert ensure_certificates(tmp_path, SVC, NS, renew_before_days=10).action is EnsureAction.REUSED
    assert ensure_certificates(tmp_path, SVC, NS, renew_before_days=30).action is EnsureAction.REGENERATED
    assert paths.ca_key.exists()


def test_renew_serving_certificate_needs_a_usable_ca(tmp_path: Path) -> None:
    paths = generate_certificates(tmp_path, SVC, NS)
    paths.ca_key.write_bytes(paths.tls_key.read_bytes())
    with pytest.raises(ValueError, match="does not belong"):
        renew_serving_certificate(tmp_path, SVC, NS)
    with pytest.raises(ValueError, match="no usable CA"):
        renew_serving_certificate(tmp_path / "missing", SVC, NS)
