"""The two certificate paths: cert-manager's CA chain + injection, and `qosgate certs generate` + kustomize.

Both yield the serving Secret (both Services' names), kube-scheduler's client Secret from the same CA, and
the CA in every webhook's caBundle."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from qosgate.certs.generate import certificate_sans
from tests.manifests.conftest import run_qosgate
from tests.manifests.helpers import (
    CLIENT_SECRET,
    EXTENDER,
    GENERATED,
    MANIFESTS,
    NAMESPACE,
    REPO,
    SELF_SIGNED,
    TLS_SECRET,
    WEBHOOK,
    Obj,
    documented_install,
    kinds,
    manifests_copy,
    one,
)
from tests.manifests.test_webhooks import webhooks
from tests.support.kustomize import KustomizeError, render

WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def service_names(service: str) -> set[str]:
    return {f"{service}.{NAMESPACE}.svc", f"{service}.{NAMESPACE}.svc.cluster.local"}


def b64(value: str) -> bytes:
    """Decode base64 the way the API server does ([]byte fields: line breaks ignored)."""
    return base64.b64decode("".join(value.split()), validate=True)


def test_overlays_only_add_certificates_and_the_ca_bundle(base: list[Obj], installs: dict[str, list[Obj]]) -> None:
    """Everything but the webhook configurations is the base, unchanged."""
    def key(o: Obj) -> tuple[str, str, str]:
        return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]

    base_objects = {key(o): o for o in base}
    for name, objects in installs.items():
        for obj in objects:
            if key(obj) in base_objects and obj["kind"] not in WEBHOOK_KINDS:
                assert obj == base_objects[key(obj)], f"{name} changed {key(obj)}"
        assert set(base_objects) <= {key(o) for o in objects}, name


# --- cert-manager ---------------------------------------------------------------------------------------

def test_cert_manager_chain(cert_manager: list[Obj]) -> None:
    selfsigned = one(cert_manager, "Issuer", "qosgate-selfsigned", NAMESPACE)
    assert selfsigned["spec"] == {"selfSigned": {}}
    ca = one(cert_manager, "Certificate", "qosgate-ca", NAMESPACE)["spec"]
    assert ca["isCA"] is True
    assert ca["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "qosgate-selfsigned"}
    ca_issuer = one(cert_manager, "Issuer", "qosgate-ca", NAMESPACE)
    assert ca_issuer["spec"] == {"ca": {"secretName": ca["secretName"]}}
    serving = one(cert_manager, "Certificate", "qosgate-serving", NAMESPACE)["spec"]
    assert serving["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "qosgate-ca"}
    assert not serving.get("isCA")
    assert "server auth" in serving["usages"] and "client auth" not in serving["usages"]
    assert serving["privateKey"]["rotationPolicy"] == "Always"


def test_cert_manager_issues_the_scheduler_client_certificate_from_the_same_ca(cert_manager: list[Obj]) -> None:
    """The extender trusts the ca.crt of its serving Secret for client certificates: one CA Issuer signs both."""
    client = one(cert_manager, "Certificate", CLIENT_SECRET, NAMESPACE)["spec"]
    serving = one(cert_manager, "Certificate", "qosgate-serving", NAMESPACE)["spec"]
    assert client["secretName"] == CLIENT_SECRET
    assert client["issuerRef"] == serving["issuerRef"]
    assert "client auth" in client["usages"] and "server auth" not in client["usages"]
    assert client["commonName"] == "qosgate-scheduler" and not client.get("isCA")
    assert client["privateKey"]["rotationPolicy"] == "Always"


def test_serving_certificate_names_both_services_and_feeds_both_deployments(cert_manager: list[Obj]) -> None:
    serving = one(cert_manager, "Certificate", "qosgate-serving", NAMESPACE)["spec"]
    assert serving["secretName"] == TLS_SECRET
    assert service_names(WEBHOOK) | service_names(EXTENDER) <= set(serving["dnsNames"])
    for deployment in kinds(cert_manager, "Deployment"):
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        secrets = {v["secret"]["secretName"] for v in volumes if "secret" in v}
        secrets |= {src["secret"]["name"] for v in volumes if "projected" in v for src in v["projected"]["sources"]}
        assert TLS_SECRET in secrets and secrets <= {TLS_SECRET, CLIENT_SECRET}


def test_ca_is_injected_into_both_configurations(cert_manager: list[Obj]) -> None:
    for kind in WEBHOOK_KINDS:
        config = one(cert_manager, kind, "qosgate")
        namespace, name = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
        one(cert_manager, "Certificate", name, namespace)  # points at a Certificate that exists
        assert name == "qosgate-serving"
        assert all("caBundle" not in hook["clientConfig"] for hook in config["webhooks"])


# --- self-signed ----------------------------------------------------------------------------------------

def test_self_signed_overlay_commits_no_certificate_material() -> None:
    """Only kustomization.yaml and .gitignore are tracked: everything secret comes from generated/."""
    tracked = {p.name for p in SELF_SIGNED.iterdir() if p.name != GENERATED and p.name != "webhook-tls-secret.yaml"}
    assert tracked == {"kustomization.yaml", ".gitignore"}


def test_generated_folder_is_git_ignored() -> None:
    for name in ("ca.key", "tls.key", "client.key"):
        result = subprocess.run(["git", "check-ignore", "-q", str(SELF_SIGNED / GENERATED / name)],
                                cwd=REPO, capture_output=True, check=False)
        if result.returncode == 128:
            pytest.skip("not a git checkout")
        assert result.returncode == 0, f"{GENERATED}/{name} (a private key) must be git-ignored"


def test_the_documented_install_is_two_commands_and_edits_nothing(self_signed_run: tuple[Path, Path, str]) -> None:
    root, _, _ = self_signed_run
    argv, overlay = documented_install(SELF_SIGNED / "kustomization.yaml")
    assert argv == ["qosgate", "certs", "generate", "--out", f"{overlay}/{GENERATED}"]
    for path in (root / "manifests").rglob("*"):  # nothing tracked was touched
        relative = path.relative_to(root)
        if path.is_file() and GENERATED not in relative.parts:
            assert path.read_bytes() == (REPO / relative).read_bytes(), relative


def test_documented_commands_produce_a_working_install(self_signed_run: tuple[Path, Path, str],
                                                       self_signed: list[Obj]) -> None:
    _, overlay, ca_bundle = self_signed_run
    generated = overlay / GENERATED
    ca_pem = (generated / "ca.crt").read_bytes()
    assert b64(ca_bundle) == ca_pem
    for name, (_, hook) in webhooks(self_signed).items():
        assert b64(hook["clientConfig"]["caBundle"]) == ca_pem, name
    secret = one(self_signed, "Secret", TLS_SECRET, NAMESPACE)
    assert secret["type"] == "kubernetes.io/tls"
    expected = {"ca.crt": ca_pem} | {name: (generated / name).read_bytes() for name in ("tls.crt", "tls.key")}
    assert {k: b64(v) for k, v in secret["data"].items()} == expected  # the files --cert-dir expects; no ca.key
    dns_names, _ = certificate_sans(generated / "tls.crt")
    assert service_names(WEBHOOK) | service_names(EXTENDER) <= set(dns_names)  # one certificate, both Services


def test_self_signed_client_secret_is_kube_schedulers_identity(self_signed_run: tuple[Path, Path, str],
                                                                self_signed: list[Obj]) -> None:
    _, overlay, _ = self_signed_run
    secret = one(self_signed, "Secret", CLIENT_SECRET, NAMESPACE)
    assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    ca = x509.load_pem_x509_certificate(b64(secret["data"]["ca.crt"]))
    client = x509.load_pem_x509_certificate(b64(secret["data"]["tls.crt"]))
    client.verify_directly_issued_by(ca)
    serving_ca = b64(one(self_signed, "Secret", TLS_SECRET, NAMESPACE)["data"]["ca.crt"])
    assert b64(secret["data"]["ca.crt"]) == serving_ca  # the CA the extender checks client certificates against
    usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert b64(secret["data"]["tls.key"]) == (overlay / GENERATED / "client.key").read_bytes()


def test_secrets_keep_fixed_names_so_renewals_update_them_in_place(self_signed: list[Obj]) -> None:
    names = {s["metadata"]["name"] for s in kinds(self_signed, "Secret")}
    assert names == {TLS_SECRET, CLIENT_SECRET}  # no content-hash suffix: the Deployments mount these names


def test_without_generated_files_the_overlay_refuses_to_render(tmp_path: Path) -> None:
    root = manifests_copy(tmp_path)
    with pytest.raises(KustomizeError, match=GENERATED):
        render(root / "manifests" / "overlays" / "self-signed")


def test_renewal_with_ensure_keeps_the_ca_bundle(self_signed_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, overlay, ca_bundle = self_signed_run
    root = manifests_copy(tmp_path)
    target = root / "manifests" / "overlays" / "self-signed"
    shutil.copytree(overlay / GENERATED, target / GENERATED)
    result = run_qosgate(["qosgate", "certs", "ensure", "--out", f"manifests/overlays/self-signed/{GENERATED}",
                          "--renew-before", "400"], root)  # a 1-year certificate counts as expiring: renew
    assert result.returncode == 0 and "renewed" in result.stderr, result.stderr
    assert result.stdout.strip() == ca_bundle
    rendered = render(target)
    for name, (_, hook) in webhooks(rendered).items():
        assert b64(hook["clientConfig"]["caBundle"]) == b64(ca_bundle), name
    renewed = b64(one(rendered, "Secret", TLS_SECRET, NAMESPACE)["data"]["tls.crt"])
    assert renewed != (overlay / GENERATED / "tls.crt").read_bytes()


def test_readme_documents_the_same_install() -> None:
    readme = MANIFESTS / "README.md"
    assert documented_install(readme) == documented_install(SELF_SIGNED / "kustomization.yaml")
    text = readme.read_text()
    assert "sed -i" not in text, "no step may ask users to edit tracked files"
    for overlay in ("cert-manager", "self-signed", "second-scheduler", "monitoring"):
        assert f"kubectl apply -k manifests/overlays/{overlay}" in text
