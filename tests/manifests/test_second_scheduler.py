"""manifests/overlays/second-scheduler: upstream kube-scheduler as `qosgate-scheduler`, for managed control planes.

RBAC mirrors what upstream grants kube-scheduler (system:kube-scheduler + system:volume-scheduler, and the
kube-system RoleBinding to extension-apiserver-authentication-reader), bound to its own ServiceAccount, with
the lease rules moved to its own Lease. The tables below are copied from Kubernetes (version in
tests/realcluster/versions), plugin/pkg/auth/authorizer/rbac/bootstrappolicy/testdata/cluster-roles.yaml
(policy.go's kubeSchedulerRules and system:volume-scheduler, default feature gates) and
namespace_policy.go; when that module is in the Go module cache, the tables are checked against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.helpers import (
    CLIENT_SECRET,
    EXTENDER,
    NAMESPACE,
    SCHEDULER,
    SECOND_SCHEDULER_CONFIG,
    Obj,
    kinds,
    one,
    selector_matches,
)
from tests.realcluster.controlplane import read_versions

KUBERNETES_VERSION = read_versions()["KUBERNETES_VERSION"]
HTTPS_PORT = 10259

Rule = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # groups, resources, verbs, names


def rule(groups: str, resources: str, verbs: str, names: str = "") -> Rule:
    return tuple(groups.split(",")), tuple(resources.split()), tuple(verbs.split()), tuple(names.split())


# system:kube-scheduler, in upstream's order ("" is the core group).
UPSTREAM_KUBE_SCHEDULER = [
    rule(",events.k8s.io", "events", "create patch update"),
    rule("coordination.k8s.io", "leases", "create"),
    rule("coordination.k8s.io", "leases", "get list update watch", "kube-scheduler"),
    rule("coordination.k8s.io", "leasecandidates", "create delete deletecollection get list patch update watch"),
    rule("", "nodes", "get list watch"),
    rule("", "pods", "delete get list watch"),
    rule("", "bindings pods/binding", "create"),
    rule("", "pods/status", "patch update"),
    rule("", "replicationcontrollers services", "get list watch"),
    rule("apps,extensions", "replicasets", "get list watch"),
    rule("apps", "statefulsets", "get list watch"),
    rule("policy", "poddisruptionbudgets", "get list watch"),
    rule("", "persistentvolumeclaims persistentvolumes", "get list watch"),
    rule("authentication.k8s.io", "tokenreviews", "create"),
    rule("authorization.k8s.io", "subjectaccessreviews", "create"),
    rule("storage.k8s.io", "csinodes", "get list watch"),
    rule("storage.k8s.io", "volumeattachments", "get list watch"),
    rule("", "namespaces", "get list watch"),
    rule("storage.k8s.io", "csidrivers", "get list watch"),
    rule("storage.k8s.io", "csistoragecapacities", "get list watch"),
    rule("resource.k8s.io", "deviceclasses", "get list watch"),
    rule("resource.k8s.io", "resourceclaims", "get list patch update watch"),
    rule("resource.k8s.io", "resourceclaims/status", "get list patch update watch"),
    rule("", "pods/finalizers", "update"),
    rule("resource.k8s.io", "resourceslices", "get list watch"),
    rule("resource.k8s.io", "resourceclaims", "create delete"),
    rule("resource.k8s.io", "devicetaintrules", "get list watch"),
    rule("resource.k8s.io", "resourceclaims/binding", "patch update"),
]
UPSTREAM_VOLUME_SCHEDULER = [
    rule("", "persistentvolumes", "get list patch update watch"),
    rule("storage.k8s.io", "storageclasses", "get list watch"),
    rule("", "persistentvolumeclaims", "get list patch update watch"),
]
# Upstream's lease rules: pinned to kube-scheduler's own Lease, or (leasecandidates) for coordinated leader
# election (gate off by default; candidates live in kube-system). Replaced by LEADER_ELECTION.
UPSTREAM_LEASE_RULES = UPSTREAM_KUBE_SCHEDULER[1:4]
LEADER_ELECTION = [
    rule("coordination.k8s.io", "leases", "create"),
    rule("coordination.k8s.io", "leases", "get list update watch", SCHEDULER),
]
# namespace_policy.go: RoleBinding kube-system/system::extension-apiserver-authentication-reader binds the
# built-in Role extension-apiserver-authentication-reader to kube-scheduler (delegated authentication).
AUTH_READER = ("kube-system", "Role", "extension-apiserver-authentication-reader")


def normalized(rules: list[dict[str, Any]]) -> list[Rule]:
    return [(tuple(r.get("apiGroups", ())), tuple(r.get("resources", ())), tuple(r["verbs"]),
             tuple(r.get("resourceNames") or ()))
            for r in rules]


def bound_roles(objects: list[Obj]) -> dict[tuple[str, str, str], list[Rule] | None]:
    """(binding scope, role kind, role name) -> the role's rules (None for a role not in `objects`), for every
    binding of the scheduler's ServiceAccount."""
    found: dict[tuple[str, str, str], list[Rule] | None] = {}
    for binding in kinds(objects, "ClusterRoleBinding") + kinds(objects, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SCHEDULER, "namespace": NAMESPACE}]
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace", "*cluster*")
        roles = [r for r in kinds(objects, ref["kind"]) if r["metadata"]["name"] == ref["name"]
                 and r["metadata"].get("namespace", "*cluster*") in (scope, "*cluster*")]
        found[(scope, ref["kind"], ref["name"])] = normalized(roles[0]["rules"]) if roles else None
    return found


def test_rbac_is_upstreams_with_its_own_lease(second_scheduler: list[Obj]) -> None:
    roles = bound_roles(second_scheduler)
    mirrored = [r for r in UPSTREAM_KUBE_SCHEDULER if r not in UPSTREAM_LEASE_RULES]
    assert roles == {
        ("*cluster*", "ClusterRole", "qosgate-scheduler"): mirrored,
        ("*cluster*", "ClusterRole", "qosgate-volume-scheduler"): UPSTREAM_VOLUME_SCHEDULER,
        (NAMESPACE, "Role", "qosgate-scheduler-leader-election"): LEADER_ELECTION,
        AUTH_READER: None,  # upstream's built-in Role, present in every cluster
    }
    assert {(r["kind"], r["metadata"]["name"]) for r in kinds(second_scheduler, "ClusterRole")
            + kinds(second_scheduler, "Role")} == {(kind, name) for (_, kind, name), rules in roles.items() if rules}


def test_lease_granted_is_the_lease_configured() -> None:
    election = yaml.safe_load(SECOND_SCHEDULER_CONFIG.read_text())["leaderElection"]
    (named,) = [r for r in LEADER_ELECTION if r[3]]
    assert (election["resourceNamespace"], election["resourceName"]) == (NAMESPACE, named[3][0])


def _go_module_cache() -> Path | None:
    if os.environ.get("GOMODCACHE"):
        return Path(os.environ["GOMODCACHE"])
    go = shutil.which("go")
    if go:
        out = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True, timeout=30, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
    return None


def test_tables_match_upstreams_policy() -> None:
    cache = _go_module_cache()
    policy = (cache / f"k8s.io/kubernetes@{KUBERNETES_VERSION}" / "plugin/pkg/auth/authorizer/rbac/bootstrappolicy"
              / "testdata") if cache else None
    if policy is None or not (policy / "cluster-roles.yaml").is_file():
        pytest.skip(f"k8s.io/kubernetes@{KUBERNETES_VERSION} is not in the Go module cache (tests/realcluster/build "
                    "downloads it)")
    upstream = {r["metadata"]["name"]: normalized(r.get("rules") or [])
                for r in yaml.safe_load((policy / "cluster-roles.yaml").read_text())["items"]}
    assert upstream["system:kube-scheduler"] == UPSTREAM_KUBE_SCHEDULER
    assert upstream["system:volume-scheduler"] == UPSTREAM_VOLUME_SCHEDULER
    bindings = yaml.safe_load((policy / "namespace-role-bindings.yaml").read_text())["items"]
    (reader,) = [b for b in bindings if b["metadata"]["name"] == "system::extension-apiserver-authentication-reader"]
    assert (reader["metadata"]["namespace"], reader["roleRef"]["kind"], reader["roleRef"]["name"]) == AUTH_READER
    assert {"kind": "User", "name": "system:kube-scheduler", "apiGroup": "rbac.authorization.k8s.io"} in reader[
        "subjects"]


# --- the Deployment ------------------------------------------------------------------------------------------

def the_deployment(objects: list[Obj]) -> Obj:
    return one(objects, "Deployment", SCHEDULER, NAMESPACE)


def container(objects: list[Obj]) -> dict[str, Any]:
    (found,) = the_deployment(objects)["spec"]["template"]["spec"]["containers"]
    return found


def test_upstream_image_pinned_to_the_tested_release(second_scheduler: list[Obj]) -> None:
    assert container(second_scheduler)["image"] == f"registry.k8s.io/kube-scheduler:{KUBERNETES_VERSION}"


def test_runs_the_shipped_configuration(second_scheduler: list[Obj]) -> None:
    deployment, main = the_deployment(second_scheduler), container(second_scheduler)
    assert main["command"][0] == "kube-scheduler"
    (config_flag,) = [a for a in main["command"] if a.startswith("--config=")]
    config_path = Path(config_flag.removeprefix("--config="))
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (name,) = [n for n, m in mounts.items() if m["mountPath"] == str(config_path.parent)]
    configmap = one(second_scheduler, "ConfigMap", volumes[name]["configMap"]["name"], NAMESPACE)
    assert configmap["data"] == {config_path.name: SECOND_SCHEDULER_CONFIG.read_text()}
    assert configmap["metadata"]["name"].startswith("qosgate-scheduler-config-")  # hashed: a change rolls pods
    assert f"--secure-port={HTTPS_PORT}" in main["command"]


def test_mounts_the_client_certificate_where_the_configuration_reads_it(second_scheduler: list[Obj]) -> None:
    deployment, main = the_deployment(second_scheduler), container(second_scheduler)
    tls = yaml.safe_load(SECOND_SCHEDULER_CONFIG.read_text())["extenders"][0]["tlsConfig"]
    folders = {str(Path(tls[f]).parent) for f in ("caFile", "certFile", "keyFile")}
    (folder,) = folders
    (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == folder]
    assert mount.get("readOnly") is True and "subPath" not in mount  # subPath would freeze renewals
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mount["name"]]["secret"]["secretName"] == CLIENT_SECRET
    assert {Path(tls[f]).name for f in ("caFile", "certFile", "keyFile")} == {"ca.crt", "tls.crt", "tls.key"}


def test_pod_is_restricted_and_probed_on_its_https_port(second_scheduler: list[Obj]) -> None:
    spec = the_deployment(second_scheduler)["spec"]["template"]["spec"]
    main = container(second_scheduler)
    assert spec["serviceAccountName"] == SCHEDULER
    assert "schedulerName" not in spec  # placed by the default scheduler: never waits on itself
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostNetwork")
    sc = main["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {"https": HTTPS_PORT}
    paths = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http = main[probe]["httpGet"]
        assert http["scheme"] == "HTTPS" and http["port"] == "https", probe
        paths[probe] = http["path"]
    # kube-scheduler always allows these paths without authentication (--authorization-always-allow-paths).
    assert set(paths.values()) <= {"/healthz", "/readyz", "/livez"} and paths["readinessProbe"] == "/readyz"
    for kind in ("requests", "limits"):
        assert set(main["resources"][kind]) == {"cpu", "memory"}


def test_replicas_and_disruption_budget(second_scheduler: list[Obj], base: list[Obj]) -> None:
    deployment = the_deployment(second_scheduler)
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = one(second_scheduler, "PodDisruptionBudget", SCHEDULER, NAMESPACE)["spec"]
    assert selector_matches(budget["selector"], labels) and budget["maxUnavailable"] == 1
    for other in kinds(base, "Deployment"):  # selects none of the install's pods, nor they its
        assert not selector_matches(budget["selector"], other["spec"]["template"]["metadata"]["labels"])
        assert not selector_matches(other["spec"]["selector"], labels)


def test_network_policies_connect_it_to_the_extender(second_scheduler: list[Obj], base: list[Obj]) -> None:
    labels = the_deployment(second_scheduler)["spec"]["template"]["metadata"]["labels"]
    extender = one(base, "Deployment", EXTENDER, NAMESPACE)
    extender_labels = extender["spec"]["template"]["metadata"]["labels"]
    (extender_port,) = [p["containerPort"] for p in extender["spec"]["template"]["spec"]["containers"][0]["ports"]
                        if p["name"] == "https"]
    own = one(second_scheduler, "NetworkPolicy", SCHEDULER, NAMESPACE)["spec"]
    assert selector_matches(own["podSelector"], labels)
    assert any(selector_matches(peer.get("podSelector", {"matchLabels": {"x": "never"}}), extender_labels)
               and {p["port"] for p in rule_["ports"]} == {extender_port}
               for rule_ in own["egress"] for peer in rule_.get("to", []))
    assert {p["port"] for r in own["ingress"] for p in r["ports"]} == {HTTPS_PORT}
    # ... and the extender's policy admits it by podSelector, whatever its ipBlock knob is narrowed to.
    (policy,) = [p for p in kinds(base, "NetworkPolicy") if selector_matches(p["spec"]["podSelector"], extender_labels)]
    admitting = [r for r in policy["spec"]["ingress"] if {p["port"] for p in r["ports"]} == {extender_port}]
    same_namespace = [peer["podSelector"] for r in admitting for peer in r["from"]
                      if "podSelector" in peer and "namespaceSelector" not in peer]
    assert any(selector_matches(selector, labels) for selector in same_namespace)


def test_everything_lives_in_qosgate_system_but_the_authentication_reader_binding(second_scheduler: list[Obj]) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for obj in second_scheduler:
        meta = obj["metadata"]
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta
        elif obj["kind"] == "RoleBinding" and meta["namespace"] == "kube-system":
            assert obj["roleRef"]["name"] == AUTH_READER[2]
        else:
            assert meta["namespace"] == NAMESPACE, obj["kind"]
        assert meta["labels"]["app.kubernetes.io/component"] == "scheduler"
