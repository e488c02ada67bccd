"""``qosgate certs``: stdout is exactly the caBundle; bad arguments give a named error, never a traceback."""

from __future__ import annotations

import argparse
import base64
import ipaddress
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qosgate.certs.cli import add_certs_parser, main, run_certs
from qosgate.certs.generate import certificate_not_after, certificate_sans

REPO = Path(__file__).resolve().parents[2]
BASE = ["certs", "generate", "--service", "qosgate-webhook", "--namespace", "qosgate-system"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_prints_a_decodable_ca_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *BASE, "--out", str(tmp_path / "c"))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 1  # only the bundle on stdout, so CA=$(qosgate certs generate …) works
    assert base64.b64decode(lines[0], validate=True) == (tmp_path / "c" / "ca.crt").read_bytes()
    assert "created" in err


def test_extra_sans_days_and_secret_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir, manifest_file = tmp_path / "c", tmp_path / "secret.yaml"
    argv = [*BASE, "--out", str(out_dir), "--dns", "Webhook.Example.com", "--ip", "10.0.0.9", "--ip", "::1"]
    code, _, _ = run(capsys, *argv, "--days", "30", "--secret-manifest", str(manifest_file))
    assert code == 0
    dns, ips = certificate_sans(out_dir / "tls.crt")
    assert "webhook.example.com" in dns and "qosgate-webhook.qosgate-system.svc" in dns
    assert {ipaddress.ip_address("10.0.0.9"), ipaddress.ip_address("::1")} <= set(ips)
    lifetime = certificate_not_after(out_dir / "tls.crt") - certificate_not_after(out_dir / "ca.crt")
    assert lifetime.days < -3000  # 30-day leaf under a 10-year CA

    manifest = yaml.safe_load(manifest_file.read_text())
    assert manifest["type"] == "kubernetes.io/tls"
    assert manifest["metadata"] == {"name": "qosgate-webhook-tls", "namespace": "qosgate-system"}
    assert base64.b64decode(manifest["data"]["tls.key"]) == (out_dir / "tls.key").read_bytes()
    assert set(manifest["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert stat.S_IMODE(manifest_file.stat().st_mode) == 0o600  # it embeds the private key


def test_ensure_reuses_and_prints_the_same_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["certs", "ensure", "--service", "qosgate-webhook", "--namespace", "qosgate-system"]
    argv += ["--out", str(tmp_path / "c")]
    code1, out1, err1 = run(capsys, *argv)
    code2, out2, err2 = run(capsys, *argv)
    assert (code1, code2) == (0, 0)
    assert out1 == out2
    assert "created" in err1 and "reused" in err2
    code3, out3, err3 = run(capsys, *argv, "--renew-before", "400")  # 1-year leaf counts as expiring
    assert code3 == 0 and "renewed" in err3 and out3 == out1


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--ip", "1.2.3"], "--ip"),
        (["--ip", "example.com"], "--ip"),
        (["--dns", "10.0.0.1"], "--dns"),  # an IP belongs in --ip (it would never match a DNS SAN)
        (["--dns", "bad name"], "--dns"),
        (["--days", "0"], "--days"),
        (["--days", "soon"], "--days"),
    ],
)
def test_bad_arguments_name_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], option: str
) -> None:
    code, out, err = run(capsys, *BASE, "--out", str(tmp_path / "c"), *extra)
    assert code == 2
    assert out == ""
    assert f"argument {option}" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(("option", "value"), [("--service", "Bad_Name"), ("--namespace", "-ns")])
def test_bad_names_name_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str) -> None:
    argv = ["certs", "generate", "--service", "qosgate-webhook", "--namespace", "qosgate-system"]
    argv[argv.index(option) + 1] = value
    code, out, err = run(capsys, *argv, f"--out={tmp_path / 'c'}")
    assert code == 2 and out == ""
    assert f"argument {option}" in err


def test_unwritable_out_dir_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, out, err = run(capsys, *BASE, "--out", str(blocker / "certs"))
    assert code == 2 and out == ""
    assert "argument --out" in err and str(blocker / "certs") in err
    code, out, err = run(capsys, *BASE, "--out", str(blocker))
    assert code == 2 and "argument --out" in err and "not a directory" in err


def test_unwritable_secret_manifest_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *BASE, "--out", str(tmp_path / "c"), "--secret-manifest", str(tmp_path / "no/x.yaml"))
    assert code == 2 and out == ""
    assert "argument --secret-manifest" in err


def test_errors_never_print_a_traceback_from_a_real_process(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    for extra in (["--out", str(blocker / "sub")], ["--out", str(tmp_path / "ok"), "--ip", "300.1.1.1"]):
        proc = subprocess.run(
            [sys.executable, "-m", "qosgate.certs.cli", *BASE, *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "error: argument" in proc.stderr
        assert proc.stdout == ""


def test_plugs_into_an_existing_parser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # How qosgate/cli.py wires it: its own parser and sub-commands, ours added alongside.
    parser = argparse.ArgumentParser(prog="qosgate")
    subparsers = parser.add_subparsers(dest="command", required=True)
    subparsers.add_parser("render")
    add_certs_parser(subparsers)
    args = parser.parse_args([*BASE, "--out", str(tmp_path / "c")])
    assert args.command == "certs" and args.func is run_certs
    assert run_certs(args) == 0
    assert base64.b64decode(capsys.readouterr().out.strip())
    assert parser.parse_args(["render"]).command == "render"


# --- defaults: everything an install needs, from `--out` alone ---------------------------------------------


def _client_cert(directory: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((directory / "client.crt").read_bytes())


def test_defaults_cover_both_services_and_issue_the_scheduler_client_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "generated"
    code, out, err = run(capsys, "certs", "generate", "--out", str(out_dir))
    assert code == 0 and "client certificate 'qosgate-scheduler'" in err
    dns, _ = certificate_sans(out_dir / "tls.crt")
    for service in ("qosgate-webhook", "qosgate-extender"):
        assert {f"{service}.qosgate-system.svc", f"{service}.qosgate-system.svc.cluster.local"} <= set(dns)
    client = _client_cert(out_dir)
    ca = x509.load_pem_x509_certificate((out_dir / "ca.crt").read_bytes())
    client.verify_directly_issued_by(ca)  # the CA the extender trusts for its verbs (--extender-client-ca)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "qosgate-scheduler"
    usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert stat.S_IMODE((out_dir / "client.key").stat().st_mode) == 0o600
    assert base64.b64decode(out.strip()) == (out_dir / "ca.crt").read_bytes()


def test_repeated_service_and_client_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "c"
    code, _, _ = run(capsys, "certs", "generate", "--out", str(out_dir), "--namespace", "ops",
                     "--service", "a", "--service", "b", "--client-name", "my-scheduler")
    assert code == 0
    dns, _ = certificate_sans(out_dir / "tls.crt")
    assert {"a.ops.svc", "b.ops.svc"} <= set(dns) and "qosgate-webhook.ops.svc" not in dns
    assert _client_cert(out_dir).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "my-scheduler"


def test_ensure_keeps_the_client_certificate_and_reissues_it_under_a_new_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "c"
    assert run(capsys, "certs", "ensure", "--out", str(out_dir))[0] == 0
    first = (out_dir / "client.crt").read_bytes()
    assert run(capsys, "certs", "ensure", "--out", str(out_dir))[0] == 0
    assert (out_dir / "client.crt").read_bytes() == first  # valid and from this CA: kept
    (out_dir / "ca.key").unlink()
    (out_dir / "ca.crt").write_bytes(b"garbage")  # CA unusable: ensure recreates it ...
    code, _, err = run(capsys, "certs", "ensure", "--out", str(out_dir))
    assert code == 0 and "CA replaced" in err
    ca = x509.load_pem_x509_certificate((out_dir / "ca.crt").read_bytes())
    _client_cert(out_dir).verify_directly_issued_by(ca)  # ... and the client certificate with it


def test_ensure_issues_the_client_certificate_with_the_requested_days_and_key_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "c"
    assert run(capsys, "certs", "ensure", "--out", str(out_dir), "--days", "40", "--key-type", "rsa")[0] == 0
    client = _client_cert(out_dir)
    assert (client.not_valid_after_utc - client.not_valid_before_utc).days in (40, 41)
    assert isinstance(client.public_key(), rsa.RSAPublicKey)


def test_bad_client_name_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "certs", "generate", "--out", str(tmp_path / "c"), "--client-name", "x" * 65)
    assert code == 2 and out == "" and "argument --client-name" in err
