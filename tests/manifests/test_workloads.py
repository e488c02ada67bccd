"""Deployments, Services, PodDisruptionBudgets, NetworkPolicies and the Namespace."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from qosgate.cli.main import build_parser
from tests.manifests.helpers import (
    CLIENT_SECRET,
    EXTENDER,
    NAMESPACE,
    REPO,
    TLS_SECRET,
    WEBHOOK,
    Obj,
    kinds,
    one,
    selector_matches,
)

CERT_DIR = "/etc/qosgate/certs"
# Deployment -> (replicas allowed, container, HTTPS port, health port, the flags `qosgate serve` gets).
DEPLOYMENTS = {
    WEBHOOK: (range(2, 4), "webhook", 8443, 9440,
              ["serve", "webhook", f"--cert-dir={CERT_DIR}", "--no-generate-certs", "--port=8443",
               "--health-port=9440", f"--catalog-configmap={NAMESPACE}/qosgate-classes"]),
    EXTENDER: (range(2, 3), "extender", 8444, 9441,
               ["serve", "extender", f"--cert-dir={CERT_DIR}", "--no-generate-certs", "--extender-port=8444",
                "--health-port=9441", "--leader-elect"]),
}


def pod_labels(deployment: Obj) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def the_container(deployment: Obj) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (found,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return found


@pytest.fixture(params=sorted(DEPLOYMENTS))
def deployment(request: pytest.FixtureRequest, base: list[Obj]) -> Obj:
    return one(base, "Deployment", request.param, NAMESPACE)


def test_exactly_the_two_deployments_and_the_node_agent(installs: dict[str, list[Obj]]) -> None:
    for objects in installs.values():
        assert {d["metadata"]["name"] for d in kinds(objects, "Deployment")} == set(DEPLOYMENTS)
        # The node agent's DaemonSet is tested with the agent (tests/agent).
        assert [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in kinds(objects, "DaemonSet")] == [
            ("qosgate-node", "qosgate-agent")]
        assert not kinds(objects, "StatefulSet")


def test_replicas_selector_and_service_account(deployment: Obj, base: list[Obj]) -> None:
    name = deployment["metadata"]["name"]
    replicas, *_ = DEPLOYMENTS[name]
    spec = deployment["spec"]
    assert spec["replicas"] in replicas
    assert selector_matches(spec["selector"], pod_labels(deployment))
    others = [d for d in kinds(base, "Deployment") if d is not deployment]
    assert not any(selector_matches(spec["selector"], pod_labels(o)) for o in others), "selectors overlap"
    pod_spec = spec["template"]["spec"]
    assert pod_spec["serviceAccountName"] == name
    one(base, "ServiceAccount", name, NAMESPACE)
    assert pod_spec["priorityClassName"] == "system-cluster-critical"


def test_restricted_security_context(deployment: Obj) -> None:
    pod_spec = deployment["spec"]["template"]["spec"]
    pod_sc = pod_spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 65532
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID") and not pod_spec.get("hostIPC")
    for container in pod_spec["containers"] + pod_spec.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not sc.get("privileged")


def test_resources_probes_and_draining(deployment: Obj) -> None:
    _, container_name, https_port, health_port, _ = DEPLOYMENTS[deployment["metadata"]["name"]]
    pod_spec = deployment["spec"]["template"]["spec"]
    container = the_container(deployment)
    assert container["name"] == container_name
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"https": https_port, "health": health_port}
    paths = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http = container[probe]["httpGet"]
        assert port_number(container, http["port"]) == health_port, probe
        assert http.get("scheme", "HTTP") == "HTTP", probe  # the health port is plain HTTP
        paths[probe] = http["path"]
    assert paths == {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # preStop sleep + `qosgate serve` defaults (--shutdown-delay 5 s, --graceful-timeout 20 s) must fit.
    assert sleep > 0 and sleep + 5 + 20 < pod_spec["terminationGracePeriodSeconds"]


def test_args_image_and_certificates(deployment: Obj) -> None:
    _, component, https_port, health_port, args = DEPLOYMENTS[deployment["metadata"]["name"]]
    container = the_container(deployment)
    assert container["args"][: len(args)] == args
    parsed = build_parser().parse_args(container["args"])  # the real CLI accepts every flag
    assert parsed.component == component and parsed.cert_dir == CERT_DIR and parsed.no_generate_certs
    assert (parsed.port if component == "webhook" else parsed.extender_port) == https_port
    assert parsed.health_port == health_port and not parsed.local
    assert "command" not in container  # the image's ENTRYPOINT is `qosgate`
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"] == f"ghcr.io/qosgate/qosgate:{version}"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    certs = mounts[CERT_DIR]
    assert certs.get("readOnly") is True and "subPath" not in certs  # subPath would freeze rotation
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]  # writable scratch under a read-only root
    files = cert_dir_files(volumes[certs["name"]])
    assert {f: files[f] for f in ("ca.crt", "tls.crt", "tls.key")} == {
        "ca.crt": (TLS_SECRET, "ca.crt"), "tls.crt": (TLS_SECRET, "tls.crt"), "tls.key": (TLS_SECRET, "tls.key")}
    if component == "extender":  # what a follower presents to the leader: a client certificate of the same CA
        assert (files["client.crt"], files["client.key"]) == ((CLIENT_SECRET, "tls.crt"), (CLIENT_SECRET, "tls.key"))
    else:
        assert set(files) == {"ca.crt", "tls.crt", "tls.key"}


def cert_dir_files(volume: Obj) -> dict[str, tuple[str, str]]:
    """file in --cert-dir -> (Secret, key) it comes from, for a secret or projected volume."""
    if "secret" in volume:
        return {key: (volume["secret"]["secretName"], key) for key in ("ca.crt", "tls.crt", "tls.key")}
    files = {}
    for source in volume["projected"]["sources"]:
        for item in source["secret"]["items"]:
            files[item["path"]] = (source["secret"]["name"], item["key"])
    return files


def test_admin_groups(base: list[Obj]) -> None:
    parsed = build_parser().parse_args(the_container(one(base, "Deployment", WEBHOOK))["args"])
    assert parsed.admin_groups.split(",") == ["qosgate:admins", "system:masters"]


def test_spread_over_nodes(deployment: Obj) -> None:
    pod_spec = deployment["spec"]["template"]["spec"]
    labels = pod_labels(deployment)
    terms = pod_spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
               and selector_matches(t["podAffinityTerm"]["labelSelector"], labels) for t in terms)
    spreads = {c["topologyKey"]: c for c in pod_spec["topologySpreadConstraints"]}
    assert spreads["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert spreads["kubernetes.io/hostname"]["nodeTaintsPolicy"] == "Honor"
    assert "topology.kubernetes.io/zone" in spreads
    assert all(selector_matches(c["labelSelector"], labels) for c in spreads.values())


def test_rollout_strategies(base: list[Obj]) -> None:
    webhook = one(base, "Deployment", WEBHOOK)["spec"]["strategy"]
    assert webhook == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    # Every extender replica with synced caches is ready (followers relay to the leader): surge works too.
    extender = one(base, "Deployment", EXTENDER)["spec"]["strategy"]
    assert extender == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_extender_advertises_its_pod_address_to_the_followers(base: list[Obj]) -> None:
    container = the_container(one(base, "Deployment", EXTENDER, NAMESPACE))
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_IP": "status.podIP"}  # `qosgate serve` reads both
    parsed = build_parser().parse_args(container["args"])
    assert parsed.leader_elect and parsed.extender_advertise_url is None  # derived from POD_IP


def test_services_select_the_pods_and_target_https(base: list[Obj]) -> None:
    assert {s["metadata"]["name"] for s in kinds(base, "Service")} == set(DEPLOYMENTS)
    for name, (_, _, https_port, _, _) in DEPLOYMENTS.items():
        service = one(base, "Service", name, NAMESPACE)
        deployment = one(base, "Deployment", name, NAMESPACE)
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
        selector = {"matchLabels": service["spec"]["selector"]}
        for other in kinds(base, "Deployment"):
            assert selector_matches(selector, pod_labels(other)) == (other is deployment), name
        (port,) = service["spec"]["ports"]
        assert port["port"] == 443 and port.get("protocol", "TCP") == "TCP"
        assert port_number(the_container(deployment), port["targetPort"]) == https_port


def test_pod_disruption_budgets(base: list[Obj]) -> None:
    budgets = kinds(base, "PodDisruptionBudget")
    assert {b["metadata"]["name"] for b in budgets} == set(DEPLOYMENTS)
    for budget in budgets:
        deployment = one(base, "Deployment", budget["metadata"]["name"], NAMESPACE)
        for other in kinds(base, "Deployment"):
            assert selector_matches(budget["spec"]["selector"], pod_labels(other)) == (other is deployment)
        assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    webhook = one(base, "PodDisruptionBudget", WEBHOOK)["spec"]
    replicas = one(base, "Deployment", WEBHOOK)["spec"]["replicas"]
    assert webhook["maxUnavailable"] == 1 and replicas - 1 >= 2  # still two serving during a drain
    extender = one(base, "PodDisruptionBudget", EXTENDER)["spec"]
    assert extender["maxUnavailable"] == 1 and one(base, "Deployment", EXTENDER)["spec"]["replicas"] >= 2


def test_network_policies(base: list[Obj]) -> None:
    policies = kinds(base, "NetworkPolicy")
    for name, (_, _, https_port, health_port, _) in DEPLOYMENTS.items():
        deployment = one(base, "Deployment", name, NAMESPACE)
        (policy,) = [p for p in policies if selector_matches(p["spec"]["podSelector"], pod_labels(deployment))]
        spec = policy["spec"]
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        ingress_ports = {(p["port"], p.get("protocol", "TCP")) for rule in spec["ingress"] for p in rule["ports"]}
        assert ingress_ports == {(https_port, "TCP"), (health_port, "TCP")}
        egress = {(p["port"], p.get("protocol", "TCP")) for rule in spec["egress"] for p in rule["ports"]}
        peers = {(https_port, "TCP")} if name == EXTENDER else set()  # followers relay to the leader
        assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")} | peers
        for rule in spec["egress"]:
            if https_port in {p["port"] for p in rule["ports"]}:
                assert [selector_matches(peer["podSelector"], pod_labels(deployment)) for peer in rule["to"]] == [True]
        dns = [r for r in spec["egress"] if {p["port"] for p in r["ports"]} == {53}]
        assert dns and all(peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
                           for rule in dns for peer in rule["to"])


def test_namespace_enforces_restricted_pod_security(base: list[Obj]) -> None:
    labels = one(base, "Namespace", NAMESPACE)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
