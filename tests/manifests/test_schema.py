"""Every rendered object is valid against the Kubernetes OpenAPI schema (strict: unknown fields fail),
for the oldest supported release and current ones; cert-manager and Prometheus Operator objects (CRDs,
unknown to kubernetes-validate) get a structural check (monitoring's in test_monitoring.py)."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest

from tests.manifests.helpers import Obj

# 1.30: oldest supported (matchConditions GA, preStop sleep and PDB unhealthyPodEvictionPolicy on by
# default); 1.33: a current release; and the newest schema kubernetes-validate ships.
VERSIONS = sorted({"1.30", "1.33", ".".join(kubernetes_validate.latest_version().split(".")[:2])},
                  key=lambda v: tuple(int(x) for x in v.split(".")))
CERT_MANAGER_GROUP = "cert-manager.io/v1"
MONITORING_GROUP = "monitoring.coreos.com/v1"
CUSTOM_GROUPS = {CERT_MANAGER_GROUP, MONITORING_GROUP}
RENDERINGS = ["base", "cert-manager", "self-signed", "nri", "second-scheduler", "monitoring"]


@pytest.fixture(params=RENDERINGS)
def rendering(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, request.getfixturevalue(request.param.replace("-", "_"))


@pytest.mark.parametrize("version", VERSIONS)
def test_builtin_objects_validate_strictly(rendering: tuple[str, list[Obj]], version: str) -> None:
    name, objects = rendering
    problems = []
    for obj in objects:
        if obj["apiVersion"] in CUSTOM_GROUPS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(exc.message)
    assert not problems, f"{name} @ {version}:\n" + "\n".join(problems)


def test_only_the_cert_manager_overlay_needs_cert_manager(installs: dict[str, list[Obj]],
                                                         addons: dict[str, list[Obj]]) -> None:
    for name, objects in {**installs, **addons}.items():
        foreign = [o["kind"] for o in objects if o["apiVersion"] == CERT_MANAGER_GROUP]
        if name != "cert-manager":
            assert not foreign, f"{name} must not need cert-manager"
        if name != "monitoring":
            assert not [o for o in objects if o["apiVersion"] == MONITORING_GROUP], f"{name} must not need Prometheus"


def test_addons_never_replace_an_object_of_an_install(installs: dict[str, list[Obj]],
                                                      addons: dict[str, list[Obj]]) -> None:
    """They are applied next to an install: an object of the same kind and name would overwrite its."""
    def keys(objects: list[Obj]) -> set[tuple[str, str, str]]:
        return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects}

    installed = set().union(*(keys(objects) for objects in installs.values()))
    for name, objects in addons.items():
        assert not keys(objects) & installed, name
    assert not keys(addons["second-scheduler"]) & keys(addons["monitoring"])


def test_every_object_has_name_labels_and_the_right_namespace(installs: dict[str, list[Obj]],
                                                              addons: dict[str, list[Obj]]) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                      "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    # The node agent lives in its own privileged namespace; its Roles reach where agent-rbac.yaml says.
    agent_namespaces = {"qosgate-node", "qosgate-system", "kube-system", "default"}
    for name, objects in {**installs, **addons}.items():
        for obj in objects:
            meta = obj["metadata"]
            label = f"{name}: {obj['kind']}/{meta['name']}"
            if obj["kind"] in cluster_scoped:
                assert "namespace" not in meta, label
            elif (name, obj["kind"], meta.get("namespace")) == ("second-scheduler", "RoleBinding", "kube-system"):
                pass  # delegated authentication: upstream's binding for kube-scheduler (test_second_scheduler.py)
            elif meta.get("labels", {}).get("app.kubernetes.io/component") == "agent":
                assert meta.get("namespace") in agent_namespaces, label
                assert obj["kind"] in {"Role", "RoleBinding"} or meta["namespace"] == "qosgate-node", label
            else:
                assert meta.get("namespace") == "qosgate-system", label
            labels = meta.get("labels", {})
            assert labels.get("app.kubernetes.io/name") == "qosgate", label
            assert labels.get("app.kubernetes.io/part-of") == "qosgate", label


# --- cert-manager: no schema in kubernetes-validate (CRDs), so check what cert-manager requires ---------

DURATION = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms))+$")
USAGES = {"signing", "digital signature", "content commitment", "key encipherment", "key agreement",
          "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
          "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
          "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"}


def _check_issuer(spec: dict[str, Any]) -> None:
    kinds = set(spec) & {"selfSigned", "ca", "acme", "vault", "venafi"}
    assert len(kinds) == 1 and set(spec) == kinds, f"an Issuer has exactly one issuer type: {spec}"
    if "ca" in spec:
        assert set(spec["ca"]) <= {"secretName", "crlDistributionPoints", "ocspServers", "issuingCertificateURLs"}
        assert isinstance(spec["ca"]["secretName"], str)
    if "selfSigned" in spec:
        assert set(spec["selfSigned"]) <= {"crlDistributionPoints"}


def _check_certificate(spec: dict[str, Any]) -> None:
    allowed = {"secretName", "issuerRef", "commonName", "dnsNames", "ipAddresses", "uris", "emailAddresses",
               "isCA", "duration", "renewBefore", "usages", "privateKey", "subject", "secretTemplate",
               "revisionHistoryLimit", "keystores", "literalSubject", "encodeUsagesInRequest", "otherNames",
               "nameConstraints", "additionalOutputFormats", "renewBeforePercentage"}
    assert set(spec) <= allowed, f"unknown Certificate fields {set(spec) - allowed}"
    assert isinstance(spec["secretName"], str) and spec["secretName"]
    ref = spec["issuerRef"]
    assert set(ref) <= {"name", "kind", "group"} and ref["name"]
    assert ref.get("kind", "Issuer") in {"Issuer", "ClusterIssuer"}
    assert ref.get("group", "cert-manager.io") == "cert-manager.io"
    assert spec.get("commonName") or spec.get("dnsNames"), "a Certificate needs a subject"
    assert all(isinstance(n, str) for n in spec.get("dnsNames", []))
    assert isinstance(spec.get("isCA", False), bool)
    for field in ("duration", "renewBefore"):
        if field in spec:
            assert DURATION.match(spec[field]), f"{field}: {spec[field]!r} is not a Go duration"
    assert set(spec.get("usages", [])) <= USAGES
    key = spec.get("privateKey", {})
    assert set(key) <= {"algorithm", "size", "encoding", "rotationPolicy"}
    assert key.get("algorithm", "RSA") in {"RSA", "ECDSA", "Ed25519"}
    if key.get("algorithm") == "ECDSA":
        assert key.get("size", 256) in {256, 384, 521}
    assert key.get("rotationPolicy", "Always") in {"Always", "Never"}
    subject = spec.get("subject", {})
    assert set(subject) <= {"organizations", "countries", "organizationalUnits", "localities", "provinces",
                            "streetAddresses", "postalCodes", "serialNumber"}
    assert all(isinstance(v, list) for k, v in subject.items() if k != "serialNumber")


def test_cert_manager_objects_are_structurally_valid(cert_manager: list[Obj]) -> None:
    objects = [o for o in cert_manager if o["apiVersion"] == CERT_MANAGER_GROUP]
    assert {o["kind"] for o in objects} == {"Issuer", "Certificate"}
    assert len(objects) == 5  # two Issuers, the CA, the serving and the client Certificate
    for obj in objects:
        assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
        {"Issuer": _check_issuer, "Certificate": _check_certificate}[obj["kind"]](obj["spec"])
