"""manifests/scheduler/kube-scheduler-config.yaml: a KubeSchedulerConfiguration (not a cluster object)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import yaml

from tests.manifests.helpers import EXTENDER, MANIFESTS, NAMESPACE, SCHEDULER_CONFIG, Obj, one

# Field names of kubescheduler.config.k8s.io/v1 Extender and ExtenderTLSConfig: the file is decoded
# strictly by kube-scheduler, so a misspelt field (enableHttps, nodeCacheable…) stops it from starting.
EXTENDER_FIELDS = {"urlPrefix", "filterVerb", "preemptVerb", "prioritizeVerb", "weight", "bindVerb", "enableHTTPS",
                   "tlsConfig", "httpTimeout", "nodeCacheCapable", "managedResources", "ignorable"}
TLS_FIELDS = {"insecure", "serverName", "certFile", "keyFile", "caFile", "certData", "keyData", "caData"}
TOP_FIELDS = {"apiVersion", "kind", "parallelism", "leaderElection", "clientConnection", "healthzBindAddress",
              "metricsBindAddress", "enableProfiling", "enableContentionProfiling", "percentageOfNodesToScore",
              "podInitialBackoffSeconds", "podMaxBackoffSeconds", "profiles", "extenders", "delayCacheUntilActive"}
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms|us|ns))+$")


def load() -> dict:
    (config,) = list(yaml.safe_load_all(SCHEDULER_CONFIG.read_text()))
    return config


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|ns|m|s)", duration))


def test_is_a_kube_scheduler_configuration() -> None:
    config = load()
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    assert set(config) <= TOP_FIELDS
    assert [p.get("schedulerName") for p in config["profiles"]] == ["default-scheduler"]


def test_extender_fields() -> None:
    (extender,) = load()["extenders"]
    assert set(extender) <= EXTENDER_FIELDS
    assert set(extender["tlsConfig"]) <= TLS_FIELDS
    verbs = (extender["filterVerb"], extender["prioritizeVerb"], extender["bindVerb"])
    assert verbs == ("filter", "prioritize", "bind")
    assert "preemptVerb" not in extender
    assert isinstance(extender["weight"], int) and extender["weight"] > 0
    assert extender["enableHTTPS"] is True
    assert extender["nodeCacheCapable"] is True  # NodeNames, not full Nodes: the extender caches nodes
    assert extender["ignorable"] is False  # never place a pod without the memory.min check
    assert GO_DURATION.match(extender["httpTimeout"]) and 0 < seconds(extender["httpTimeout"]) <= 10
    # managedResources would restrict the extender to pods requesting an extended resource; none do.
    assert "managedResources" not in extender


def test_extender_tls_is_verified() -> None:
    (extender,) = load()["extenders"]
    tls = extender["tlsConfig"]
    assert not tls.get("insecure")
    # Without a CA kube-scheduler silently skips verification (DESIGN §7).
    assert tls.get("caFile") or tls.get("caData")
    host = urlsplit(extender["urlPrefix"]).hostname
    assert tls.get("serverName", host) == host


def test_url_points_at_the_extender_service(base: list[Obj], cert_manager: list[Obj]) -> None:
    (extender,) = load()["extenders"]
    url = urlsplit(extender["urlPrefix"])
    assert url.scheme == "https" and url.path in ("", "/")
    assert url.hostname == f"{EXTENDER}.{NAMESPACE}.svc"
    service = one(base, "Service", EXTENDER, NAMESPACE)
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    serving = one(cert_manager, "Certificate", "qosgate-serving", NAMESPACE)
    assert url.hostname in serving["spec"]["dnsNames"]


def test_not_applied_as_a_cluster_object() -> None:
    folder = SCHEDULER_CONFIG.parent
    assert not any((folder / name).exists() for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"))
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        resources = yaml.safe_load(kustomization.read_text()).get("resources") or []
        assert not any("scheduler" in entry for entry in resources), kustomization
