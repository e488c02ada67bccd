"""CertReloader without a server: which pair gets served after each kind of change on disk."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from qosgate.certs.generate import atomic_write, generate_certificates, renew_serving_certificate
from qosgate.serving import tls as serving
from qosgate.serving.tls import CertificateLoadError, CertReloader
from tests.support.tls import WEBHOOK_NAMESPACE, WEBHOOK_SERVICE, make_cert_dir


def reloader_for(directory: Path) -> CertReloader:
    return CertReloader(directory / "tls.crt", directory / "tls.key", interval=60)


def leaf_fingerprint(directory: Path) -> str:
    return x509.load_pem_x509_certificate((directory / "tls.crt").read_bytes()).fingerprint(hashes.SHA256()).hex()


def install(src: Path, dst: Path, *, cert: bool = True, key: bool = True) -> None:
    if key:
        atomic_write(dst / "tls.key", (src / "tls.key").read_bytes(), 0o600)
    if cert:
        atomic_write(dst / "tls.crt", (src / "tls.crt").read_bytes(), 0o644)


def test_initial_load_exposes_expiry_and_validity(fresh_cert_dir: Path) -> None:
    reloader = reloader_for(fresh_cert_dir)
    assert reloader.fingerprint == leaf_fingerprint(fresh_cert_dir)
    assert reloader.not_after == x509.load_der_x509_certificate(reloader.certificate_der).not_valid_after_utc
    assert reloader.not_after > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    assert reloader.is_valid()
    assert not reloader.is_valid(reloader.not_after + dt.timedelta(seconds=1))
    assert reloader.last_error is None and reloader.reloads == 0
    assert reloader.context.minimum_version >= ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("damage", ["missing", "garbage-cert", "garbage-key", "mismatch"])
def test_initial_load_fails_fast_with_a_clear_error(fresh_cert_dir: Path, tmp_path: Path, damage: str) -> None:
    if damage == "missing":
        (fresh_cert_dir / "tls.key").unlink()
        expected = "cannot read"
    elif damage == "garbage-cert":
        (fresh_cert_dir / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
        expected = "no valid PEM certificate"
    elif damage == "garbage-key":
        (fresh_cert_dir / "tls.key").write_text("nope")
        expected = "private key"
    else:
        install(make_cert_dir(tmp_path / "other"), fresh_cert_dir, cert=False)
        expected = "does not match"
    with pytest.raises(CertificateLoadError, match=expected):
        reloader_for(fresh_cert_dir)


def test_unchanged_files_are_not_reloaded(fresh_cert_dir: Path) -> None:
    reloader = reloader_for(fresh_cert_dir)
    assert reloader.check() is False
    (fresh_cert_dir / "tls.crt").touch()  # a new mtime alone is not a new certificate
    assert reloader.check() is False
    assert reloader.reloads == 0 and reloader.checks == 2


def test_new_serving_cert_from_the_same_ca_is_swapped_in(fresh_cert_dir: Path) -> None:
    reloader = reloader_for(fresh_cert_dir)
    before = reloader.fingerprint
    renew_serving_certificate(fresh_cert_dir, WEBHOOK_SERVICE, WEBHOOK_NAMESPACE)
    assert reloader.check() is True
    assert reloader.fingerprint == leaf_fingerprint(fresh_cert_dir) != before
    assert reloader.reloads == 1 and reloader.last_error is None


def test_half_written_pair_keeps_the_old_cert_until_the_pair_is_complete(
    fresh_cert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = reloader_for(fresh_cert_dir)
    before = reloader.fingerprint
    new = make_cert_dir(tmp_path / "new")
    install(new, fresh_cert_dir, key=False)  # certificate replaced, key not yet
    with caplog.at_level(logging.WARNING, logger="qosgate.certs"):
        assert reloader.check() is False
        assert reloader.check() is False  # same bad pair: reported once, not every poll
    assert reloader.fingerprint == before
    assert "does not match" in (reloader.last_error or "")
    assert len([r for r in caplog.records if "keeping the current" in r.getMessage()]) == 1
    install(new, fresh_cert_dir, cert=False)  # …and now the key
    assert reloader.check() is True
    assert reloader.fingerprint == leaf_fingerprint(new)
    assert reloader.last_error is None


@pytest.mark.parametrize("damage", ["garbage", "empty", "deleted"])
def test_broken_files_keep_the_old_cert(fresh_cert_dir: Path, damage: str) -> None:
    reloader = reloader_for(fresh_cert_dir)
    before = reloader.fingerprint
    good = (fresh_cert_dir / "tls.crt").read_bytes()
    if damage == "deleted":
        (fresh_cert_dir / "tls.crt").unlink()
    else:
        (fresh_cert_dir / "tls.crt").write_bytes(b"garbage" if damage == "garbage" else b"")
    assert reloader.check() is False
    assert reloader.fingerprint == before and reloader.last_error
    (fresh_cert_dir / "tls.crt").write_bytes(good)  # restored: error clears, nothing reloaded
    assert reloader.check() is False
    assert reloader.last_error is None and reloader.reloads == 0


def test_expired_replacement_is_refused(fresh_cert_dir: Path, tmp_path: Path) -> None:
    reloader = reloader_for(fresh_cert_dir)
    before = reloader.fingerprint
    expired = generate_certificates(
        tmp_path / "old", WEBHOOK_SERVICE, WEBHOOK_NAMESPACE, days=1, now=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    ).directory
    install(expired, fresh_cert_dir)
    assert reloader.check() is False
    assert "expired" in (reloader.last_error or "")
    assert reloader.fingerprint == before


def test_switching_key_algorithm_is_a_plain_swap(tmp_path: Path) -> None:
    directory = make_cert_dir(tmp_path / "rsa", key_type="rsa")
    reloader = reloader_for(directory)
    assert isinstance(x509.load_der_x509_certificate(reloader.certificate_der).public_key(), rsa.RSAPublicKey)
    install(make_cert_dir(tmp_path / "ec"), directory)
    assert reloader.check() is True
    assert isinstance(x509.load_der_x509_certificate(reloader.certificate_der).public_key(), ec.EllipticCurvePublicKey)


def test_kubernetes_secret_volume_symlink_swap(tmp_path: Path) -> None:
    # kubelet updates Secret volumes by writing a new timestamped dir and re-pointing ..data.
    volume = tmp_path / "volume"
    volume.mkdir()
    first = make_cert_dir(volume / "..2024_01_01")
    (volume / "..data").symlink_to(first.name)
    for name in ("tls.crt", "tls.key"):
        (volume / name).symlink_to(f"..data/{name}")
    reloader = reloader_for(volume)
    before = reloader.fingerprint
    second = make_cert_dir(volume / "..2024_02_01")
    (volume / "..data_tmp").symlink_to(second.name)
    (volume / "..data_tmp").replace(volume / "..data")
    shutil.rmtree(first)
    assert reloader.check() is True
    assert reloader.fingerprint == leaf_fingerprint(second) != before


def test_interval_must_be_positive(fresh_cert_dir: Path) -> None:
    with pytest.raises(ValueError, match="interval"):
        CertReloader(fresh_cert_dir / "tls.crt", fresh_cert_dir / "tls.key", interval=0)


def test_loads_without_memfd(fresh_cert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Some seccomp profiles deny memfd_create; the validated bytes then go through a private temp dir.
    def denied(*_args: object) -> int:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(serving.os, "memfd_create", denied, raising=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(serving.tempfile, "tempdir", str(scratch))
    reloader = reloader_for(fresh_cert_dir)
    renew_serving_certificate(fresh_cert_dir, WEBHOOK_SERVICE, WEBHOOK_NAMESPACE)
    assert reloader.check() is True
    assert reloader.fingerprint == leaf_fingerprint(fresh_cert_dir)
    assert list(scratch.iterdir()) == []  # nothing left behind
