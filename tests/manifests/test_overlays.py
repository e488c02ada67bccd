"""The two certificate paths: cert-manager's CA chain + injection, and `qosgate certs generate`."""

from __future__ import annotations

import base64
import binascii
import subprocess
from pathlib import Path

import pytest
import yaml

from qosgate.certs.generate import certificate_sans
from tests.manifests.helpers import (
    CA_BUNDLE_PLACEHOLDER,
    EXTENDER,
    MANIFESTS,
    NAMESPACE,
    REPO,
    SELF_SIGNED,
    SELF_SIGNED_SECRET_FILE,
    TLS_SECRET,
    WEBHOOK,
    Obj,
    documented_certs_command,
    kinds,
    one,
)
from tests.manifests.test_webhooks import webhooks

WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def service_names(service: str) -> set[str]:
    return {f"{service}.{NAMESPACE}.svc", f"{service}.{NAMESPACE}.svc.cluster.local"}


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
    assert "server auth" in serving["usages"]
    assert serving["privateKey"]["rotationPolicy"] == "Always"


def test_serving_certificate_names_both_services_and_feeds_both_deployments(cert_manager: list[Obj]) -> None:
    serving = one(cert_manager, "Certificate", "qosgate-serving", NAMESPACE)["spec"]
    assert serving["secretName"] == TLS_SECRET
    assert service_names(WEBHOOK) | service_names(EXTENDER) <= set(serving["dnsNames"])
    for deployment in kinds(cert_manager, "Deployment"):
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        secrets = [v["secret"]["secretName"] for v in volumes if "secret" in v]
        assert secrets == [TLS_SECRET]


def test_ca_is_injected_into_both_configurations(cert_manager: list[Obj]) -> None:
    for kind in WEBHOOK_KINDS:
        config = one(cert_manager, kind, "qosgate")
        namespace, name = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
        one(cert_manager, "Certificate", name, namespace)  # points at a Certificate that exists
        assert name == "qosgate-serving"
        assert all("caBundle" not in hook["clientConfig"] for hook in config["webhooks"])


# --- self-signed ----------------------------------------------------------------------------------------

def test_committed_ca_bundle_patches_fail_loudly_until_filled_in(base: list[Obj]) -> None:
    """The placeholder is not base64, so the API server refuses the configurations until the sed ran."""
    with pytest.raises(binascii.Error):
        base64.b64decode(CA_BUNDLE_PLACEHOLDER, validate=True)
    patched = set()
    for path in sorted(SELF_SIGNED.glob("ca-bundle-*.yaml")):
        patch = yaml.safe_load(path.read_text())
        assert patch["kind"] in WEBHOOK_KINDS
        for hook in patch["webhooks"]:
            assert set(hook) == {"name", "clientConfig"} and hook["clientConfig"] == {"caBundle": CA_BUNDLE_PLACEHOLDER}
            patched.add(hook["name"])
    assert patched == set(webhooks(base)), "every webhook of the base needs its caBundle patched"


def test_secret_manifest_is_git_ignored() -> None:
    result = subprocess.run(["git", "check-ignore", "-q", str(SELF_SIGNED / SELF_SIGNED_SECRET_FILE)],
                            cwd=REPO, capture_output=True, check=False)
    if result.returncode == 128:
        pytest.skip("not a git checkout")
    assert result.returncode == 0, "the generated Secret (private key) must be git-ignored"


def test_documented_commands_produce_a_working_install(self_signed_run: tuple[Path, str],
                                                       self_signed: list[Obj]) -> None:
    root, ca_bundle = self_signed_run
    ca_pem = base64.b64decode(ca_bundle, validate=True)
    assert ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    for name, (_, hook) in webhooks(self_signed).items():
        assert hook["clientConfig"]["caBundle"] == ca_bundle, name
    secret = one(self_signed, "Secret", TLS_SECRET, NAMESPACE)
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}  # the files --cert-dir expects
    assert base64.b64decode(secret["data"]["ca.crt"]) == ca_pem
    # The one certificate serves both Services.
    leaf = root / "leaf.crt"
    leaf.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    dns_names, _ = certificate_sans(leaf)
    assert service_names(WEBHOOK) | service_names(EXTENDER) <= set(dns_names)


def test_readme_documents_the_same_steps() -> None:
    readme = MANIFESTS / "README.md"
    assert documented_certs_command(readme) == documented_certs_command(SELF_SIGNED / "kustomization.yaml")
    text = readme.read_text()
    sed = 'sed -i "s|caBundle: .*|caBundle: ${CA_BUNDLE}|" manifests/overlays/self-signed/ca-bundle-*.yaml'
    assert sed in text and sed in (SELF_SIGNED / "kustomization.yaml").read_text()
    for overlay in ("cert-manager", "self-signed"):
        assert f"kubectl apply -k manifests/overlays/{overlay}" in text
