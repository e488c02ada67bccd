"""The two KubeSchedulerConfigurations qosgate ships (not cluster objects as such):

- manifests/scheduler/kube-scheduler-config.yaml, for a self-managed kube-scheduler (static pod);
- manifests/overlays/second-scheduler/kube-scheduler-config.yaml, the second scheduler's (in a ConfigMap).

kubernetes-validate has no schema for KubeSchedulerConfiguration, so each is checked structurally here and,
where tests/realcluster/build's kube-scheduler exists, by the real kube-scheduler: `--write-config-to` makes
it decode the file strictly, default and validate it, build its extenders (loading the TLS files) and exit.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from qosgate.certs.generate import generate_certificates, issue_client_certificate
from tests.manifests.helpers import (
    CLIENT_SECRET,
    EXTENDER,
    MANIFESTS,
    NAMESPACE,
    SCHEDULER,
    SCHEDULER_CONFIG,
    SECOND_SCHEDULER_CONFIG,
    Obj,
    one,
)

# Field names of kubescheduler.config.k8s.io/v1 (KubeSchedulerConfiguration, Extender, ExtenderTLSConfig,
# LeaderElectionConfiguration): the file is decoded strictly, so a misspelt field stops kube-scheduler.
EXTENDER_FIELDS = {"urlPrefix", "filterVerb", "preemptVerb", "prioritizeVerb", "weight", "bindVerb", "enableHTTPS",
                   "tlsConfig", "httpTimeout", "nodeCacheCapable", "managedResources", "ignorable"}
TLS_FIELDS = {"insecure", "serverName", "certFile", "keyFile", "caFile", "certData", "keyData", "caData"}
TOP_FIELDS = {"apiVersion", "kind", "parallelism", "leaderElection", "clientConnection", "healthzBindAddress",
              "metricsBindAddress", "enableProfiling", "enableContentionProfiling", "percentageOfNodesToScore",
              "podInitialBackoffSeconds", "podMaxBackoffSeconds", "profiles", "extenders", "delayCacheUntilActive"}
LEADER_FIELDS = {"leaderElect", "leaseDuration", "renewDeadline", "retryPeriod", "resourceLock", "resourceName",
                 "resourceNamespace"}
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms|us|ns))+$")
CONFIGS = {"static": SCHEDULER_CONFIG, "second": SECOND_SCHEDULER_CONFIG}
PROFILE = {"static": "default-scheduler", "second": SCHEDULER}
CLIENT_MOUNT = "/etc/qosgate/scheduler-client"


def load(path: Path) -> dict[str, Any]:
    (config,) = list(yaml.safe_load_all(path.read_text()))
    return config


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|ns|m|s)", duration))


@pytest.fixture(params=sorted(CONFIGS))
def which(request: pytest.FixtureRequest) -> str:
    return request.param


def test_is_a_kube_scheduler_configuration(which: str) -> None:
    config = load(CONFIGS[which])
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    assert set(config) <= TOP_FIELDS
    assert set(config["leaderElection"]) <= LEADER_FIELDS and config["leaderElection"]["leaderElect"] is True
    assert [p.get("schedulerName") for p in config["profiles"]] == [PROFILE[which]]
    percentage = config.get("percentageOfNodesToScore")
    assert percentage is None or 0 < percentage <= 100


def test_extender_fields(which: str) -> None:
    (extender,) = load(CONFIGS[which])["extenders"]
    assert set(extender) <= EXTENDER_FIELDS
    assert set(extender["tlsConfig"]) <= TLS_FIELDS
    verbs = (extender["filterVerb"], extender["prioritizeVerb"], extender["bindVerb"], extender["preemptVerb"])
    assert verbs == ("filter", "prioritize", "bind", "preempt")
    assert isinstance(extender["weight"], int) and extender["weight"] > 0
    assert extender["enableHTTPS"] is True
    assert extender["nodeCacheCapable"] is True  # NodeNames, not full Nodes: the extender caches nodes
    assert extender["ignorable"] is False  # never place a pod without the memory.min check
    assert GO_DURATION.match(extender["httpTimeout"]) and 0 < seconds(extender["httpTimeout"]) <= 10
    # managedResources would restrict the extender to pods requesting an extended resource; none do.
    assert "managedResources" not in extender


def test_both_configurations_carry_the_same_extender_entry_but_for_file_paths() -> None:
    static, second = (dict(load(CONFIGS[w])["extenders"][0]) for w in ("static", "second"))
    for entry in (static, second):
        entry["tlsConfig"] = {k: v for k, v in entry["tlsConfig"].items() if not k.endswith("File")}
    assert static == second


def test_extender_tls_is_verified_and_presents_a_client_certificate(which: str) -> None:
    (extender,) = load(CONFIGS[which])["extenders"]
    tls = extender["tlsConfig"]
    assert not tls.get("insecure")
    # Without a CA kube-scheduler silently skips verification (architecture §7.1).
    assert tls.get("caFile") or tls.get("caData")
    # The extender refuses its verbs to callers without a client certificate from its CA (issue 10).
    assert (tls.get("certFile") and tls.get("keyFile")) or (tls.get("certData") and tls.get("keyData"))
    # Files, not inline data: kube-scheduler re-reads certFile/keyFile when they change (renewal, no restart).
    assert {"certFile", "keyFile", "caFile"} <= set(tls) and not {"certData", "keyData", "caData"} & set(tls)
    host = urlsplit(extender["urlPrefix"]).hostname
    assert tls.get("serverName", host) == host


def test_url_points_at_the_extender_service(which: str, base: list[Obj], cert_manager: list[Obj]) -> None:
    (extender,) = load(CONFIGS[which])["extenders"]
    url = urlsplit(extender["urlPrefix"])
    assert url.scheme == "https" and url.path in ("", "/")
    assert url.hostname == f"{EXTENDER}.{NAMESPACE}.svc"
    service = one(base, "Service", EXTENDER, NAMESPACE)
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    serving = one(cert_manager, "Certificate", "qosgate-serving", NAMESPACE)
    assert url.hostname in serving["spec"]["dnsNames"]


def test_static_configuration_reads_the_client_secret_files_copied_to_the_node() -> None:
    """manifests/README.md copies ca.crt, tls.crt, tls.key of the client Secret to these paths."""
    tls = load(SCHEDULER_CONFIG)["extenders"][0]["tlsConfig"]
    folder = "/etc/kubernetes/qosgate"
    assert (tls["caFile"], tls["certFile"], tls["keyFile"]) == (
        f"{folder}/ca.crt", f"{folder}/client.crt", f"{folder}/client.key")
    readme = (MANIFESTS / "README.md").read_text()
    for path in tls["caFile"], tls["certFile"], tls["keyFile"]:
        assert path in readme, path
    assert CLIENT_SECRET in readme


def test_second_configuration_reads_the_mounted_client_secret(second_scheduler: list[Obj]) -> None:
    config = load(SECOND_SCHEDULER_CONFIG)
    tls = config["extenders"][0]["tlsConfig"]
    assert (tls["caFile"], tls["certFile"], tls["keyFile"]) == (
        f"{CLIENT_MOUNT}/ca.crt", f"{CLIENT_MOUNT}/tls.crt", f"{CLIENT_MOUNT}/tls.key")  # kubernetes.io/tls keys
    assert "clientConnection" not in config  # in-cluster: the pod's service account
    election = config["leaderElection"]
    assert (election["resourceLock"], election["resourceNamespace"], election["resourceName"]) == (
        "leases", NAMESPACE, SCHEDULER)  # its own Lease, never kube-system/kube-scheduler
    assert config["percentageOfNodesToScore"] == 100


def test_not_applied_as_a_cluster_object() -> None:
    folder = SCHEDULER_CONFIG.parent
    assert not any((folder / name).exists() for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"))
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        resources = yaml.safe_load(kustomization.read_text()).get("resources") or []
        assert not any("scheduler/" in entry or entry.endswith("kube-scheduler-config.yaml") for entry in resources)


# --- the real kube-scheduler ---------------------------------------------------------------------------------

def dry_run(binaries: Path, config: dict[str, Any], tmp: Path) -> subprocess.CompletedProcess[str]:
    """kube-scheduler's own check of `config`: file paths are redirected to a throw-away cert dir and
    kubeconfig (nothing is contacted: --write-config-to exits once the scheduler is built)."""
    certs = tmp / "certs"
    generate_certificates(certs, "qosgate-webhook", NAMESPACE)
    issue_client_certificate(certs)
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    config = {**config, "clientConnection": {**config.get("clientConnection", {}), "kubeconfig": str(kubeconfig)}}
    for extender in config["extenders"]:
        tls = extender["tlsConfig"]
        for field, name in (("caFile", "ca.crt"), ("certFile", "client.crt"), ("keyFile", "client.key")):
            assert field in tls
            tls[field] = str(certs / name)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([str(binaries / "kube-scheduler"), "--config", str(path), "--secure-port", "0",
                           "--write-config-to", str(tmp / "effective.yaml")],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_real_kube_scheduler_accepts_it(which: str, control_plane_bin: Path, tmp_path: Path) -> None:
    done = dry_run(control_plane_bin, load(CONFIGS[which]), tmp_path)
    assert done.returncode == 0, done.stderr
    effective = yaml.safe_load((tmp_path / "effective.yaml").read_text())
    assert [p["schedulerName"] for p in effective["profiles"]] == [PROFILE[which]]
    (extender,) = effective["extenders"]
    assert extender["bindVerb"] == "bind" and extender["tlsConfig"]["certFile"].endswith("client.crt")


def test_the_real_kube_scheduler_catches_what_this_file_checks(control_plane_bin: Path, tmp_path: Path) -> None:
    """The dry run is a real check: a misspelt field and a missing client certificate both fail it."""
    config = load(SECOND_SCHEDULER_CONFIG)
    misspelt = {**config, "extenders": [{**config["extenders"][0], "nodeCacheable": True}]}
    (tmp_path / "a").mkdir()
    done = dry_run(control_plane_bin, misspelt, tmp_path / "a")
    assert done.returncode != 0 and "nodeCacheable" in done.stderr
    (tmp_path / "b").mkdir()
    done = dry_run(control_plane_bin, config, tmp_path / "b")
    assert done.returncode == 0, done.stderr
    (tmp_path / "b" / "certs" / "client.crt").unlink()
    done = subprocess.run([str(control_plane_bin / "kube-scheduler"), "--config", str(tmp_path / "b" / "config.yaml"),
                           "--secure-port", "0", "--write-config-to", str(tmp_path / "b" / "again.yaml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "client.crt" in done.stderr
