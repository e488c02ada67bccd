"""The serving layer reads certificates with the standard library only: validity from DER, key checks by OpenSSL.

`cryptography` appears here only to make certificates and to be the reference reading them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.serving.tls import CertificateLoadError, CertReloader, certificate_validity

_KEY = ec.generate_private_key(ec.SECP256R1())


def der_certificate(not_before: dt.datetime, not_after: dt.datetime, serial: int = 1, version_1: bool = False) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "validity-test")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(_KEY.public_key())
               .serial_number(serial).not_valid_before(not_before).not_valid_after(not_after))
    if not version_1:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    return builder.sign(_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# UTCTime covers 1950–2049, GeneralizedTime the rest (RFC 5280 §4.1.2.5); cryptography picks as the RFC says.
MOMENTS = st.datetimes(min_value=dt.datetime(1951, 1, 1), max_value=dt.datetime(9998, 12, 31)).map(
    lambda moment: moment.replace(microsecond=0, tzinfo=dt.UTC))


@settings(max_examples=60, deadline=None)
@given(MOMENTS, MOMENTS, st.integers(1, 2**159 - 1))
def test_validity_matches_the_reference_reader(first: dt.datetime, second: dt.datetime, serial: int) -> None:
    not_before, not_after = sorted((first, second))
    der = der_certificate(not_before, not_after, serial)
    reference = x509.load_der_x509_certificate(der)
    assert certificate_validity(der) == (reference.not_valid_before_utc, reference.not_valid_after_utc)


# One certificate for every example (ECDSA signatures differ in length from one signing to the next).
_SAMPLE = der_certificate(dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2060, 1, 1, tzinfo=dt.UTC))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_der_is_a_value_error_never_anything_else(data: st.DataObject) -> None:
    der = _SAMPLE
    cut = data.draw(st.integers(0, len(der)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(der) - 1), st.integers(0, 255)), max_size=4))
    damaged = bytearray(der[:cut] if data.draw(st.booleans()) else der)
    for index, value in flips:
        if index < len(damaged):
            damaged[index] = value
    with contextlib.suppress(ValueError):
        certificate_validity(bytes(damaged))


def test_a_version_1_certificate_has_no_version_field_and_still_reads() -> None:
    der = der_certificate(dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC), dt.datetime(2034, 1, 1, tzinfo=dt.UTC),
                          version_1=True)
    assert certificate_validity(der)[0] == dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


def test_an_encrypted_key_is_refused_without_prompting(fresh_cert_dir: Path) -> None:
    key = serialization.load_pem_private_key((fresh_cert_dir / "tls.key").read_bytes(), password=None)
    (fresh_cert_dir / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(CertificateLoadError, match="no valid unencrypted PEM private key"):
        CertReloader(fresh_cert_dir / "tls.crt", fresh_cert_dir / "tls.key")


def test_a_key_of_another_algorithm_does_not_match(fresh_cert_dir: Path, tmp_path: Path) -> None:
    from tests.support.tls import make_cert_dir

    rsa_dir = make_cert_dir(tmp_path / "rsa", key_type="rsa")
    (fresh_cert_dir / "tls.key").write_bytes((rsa_dir / "tls.key").read_bytes())
    with pytest.raises(CertificateLoadError, match="does not match"):
        CertReloader(fresh_cert_dir / "tls.crt", fresh_cert_dir / "tls.key")


def test_fingerprint_and_expiry_are_those_of_the_leaf(fresh_cert_dir: Path) -> None:
    reloader = CertReloader(fresh_cert_dir / "tls.crt", fresh_cert_dir / "tls.key")
    leaf = x509.load_pem_x509_certificate((fresh_cert_dir / "tls.crt").read_bytes())
    assert reloader.fingerprint == leaf.fingerprint(hashes.SHA256()).hex()
    assert reloader.certificate_der == ssl.PEM_cert_to_DER_cert((fresh_cert_dir / "tls.crt").read_text())
    assert reloader.not_after == leaf.not_valid_after_utc
