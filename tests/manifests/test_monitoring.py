"""manifests/overlays/monitoring: the PrometheusRule, the ServiceMonitor and its metrics Services, the dashboard.

- The rules pass `promtool check rules` and the unit tests in tests/manifests/promtool/ (synthetic series),
  with promtool from tests/realcluster/build; every alert has a test where it fires.
- Every metric the rules and the dashboard query is one qosgate exports: scraped from a running
  `qosgate serve all --local` where it exists there, otherwise found in the source of the component that
  exports it in a cluster (CLUSTER_ONLY), or listed with the outside exporter it comes from (EXTERNAL).
  tests/realcluster/test_e2e_monitoring.py scrapes the cluster-only ones from the running components.
- The Prometheus Operator objects (CRDs, unknown to kubernetes-validate) are checked structurally.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.helpers import (
    EXTENDER,
    MONITORING,
    NAMESPACE,
    REPO,
    WEBHOOK,
    Obj,
    kinds,
    one,
    selector_matches,
)
from tests.support.processes import ServedProcess, launcher
from tests.support.tls import https_client

PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "qosgate-rules.test.yaml"
DASHBOARD = MONITORING / "dashboards" / "qosgate.json"
AGENT_NAMESPACE = "qosgate-node"
# Metrics Service -> (namespace, the workload whose pods it selects).
METRICS_SERVICES = {
    "qosgate-webhook-metrics": (NAMESPACE, "Deployment", WEBHOOK),
    "qosgate-extender-metrics": (NAMESPACE, "Deployment", EXTENDER),
    "qosgate-agent-metrics": (AGENT_NAMESPACE, "DaemonSet", "qosgate-agent"),
}
SEVERITIES = {"critical", "warning", "info"}

# Metrics that exist only in a cluster (no `--local` equivalent), with who exports them and where the
# source defines them (the name as a string literal; counters without `_total`, histograms without suffix).
CLUSTER_ONLY: dict[str, tuple[str, str]] = {
    "qosgate_quota_used": ("webhook", "webhook"),
    "qosgate_quota_capacity": ("webhook", "webhook"),
    "qosgate_quota_memory_min_used_bytes": ("webhook", "webhook"),
    "qosgate_quota_memory_min_cap_bytes": ("webhook", "webhook"),
    "qosgate_cache_synced": ("webhook and extender", "qosgate/serving"),
    "qosgate_node_protected_bytes": ("extender", "extender"),
    "qosgate_extender_leader": ("extender (with --leader-elect)", "extender"),
    "qosgate_extender_forwarded_total": ("extender (followers, with --leader-elect and peers)", "qosgate/serving"),
    "qosgate_node_protectable_bytes": ("extender and node agent", "agent"),
    "qosgate_node_accounted_bytes": ("node agent", "agent"),
    "qosgate_node_kernel_protected_bytes": ("node agent", "agent"),
    "qosgate_node_protection_drift_bytes": ("node agent", "agent"),
    "qosgate_node_overcommit_bytes": ("node agent", "agent"),
    "qosgate_agent_pass_duration_seconds_bucket": ("node agent", "agent"),
    "qosgate_agent_writes_total": ("node agent", "agent"),
    "qosgate_agent_errors_total": ("node agent", "agent"),
    "qosgate_agent_report_published_timestamp_seconds": ("node agent", "agent"),
    "qosgate_agent_nri_mismatches": ("node agent", "agent"),
}
# Metrics from outside qosgate, and their exporter.
EXTERNAL = {
    "up": "Prometheus (one per scrape target)",
    "apiserver_admission_webhook_rejection_count": "kube-apiserver (k8s.io/apiserver pkg/admission/metrics)",
}


# --- objects ---------------------------------------------------------------------------------------------

def the_rule(monitoring: list[Obj]) -> Obj:
    return one(monitoring, "PrometheusRule", "qosgate", NAMESPACE)


def alerts(monitoring: list[Obj]) -> list[dict[str, Any]]:
    return [r for group in the_rule(monitoring)["spec"]["groups"] for r in group["rules"]]


def test_prometheus_rule_is_structurally_valid(monitoring: list[Obj]) -> None:
    rule = the_rule(monitoring)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    names = [g["name"] for g in rule["spec"]["groups"]]
    assert len(names) == len(set(names))
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "partial_response_strategy", "limit", "labels"}
        for r in group["rules"]:
            assert set(r) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert "alert" in r and isinstance(r["expr"], str)
            assert re.fullmatch(r"(\d+[smhd])+", r["for"]), r["alert"]
            assert r["labels"]["severity"] in SEVERITIES, r["alert"]
            assert set(r["annotations"]) == {"summary", "description"}, r["alert"]
    alert_names = [r["alert"] for r in alerts(monitoring)]
    assert len(alert_names) == len(set(alert_names))
    assert all(n.startswith("Qosgate") for n in alert_names)


def test_the_alerts_the_issue_asks_for_exist(monitoring: list[Obj]) -> None:
    names = {r["alert"] for r in alerts(monitoring)}
    assert {
        "QosgateWebhookInternalErrors", "QosgateWebhookSlow",  # webhook errors or latency
        "QosgateValidatingWebhookUnavailable",
        "QosgateExtenderNoReadyLeader",
        "QosgateExtenderErrors",  # filter errors
        "QosgateNodeKernelProtectionOverBudget", "QosgateNodeProtectionDrift",
        "QosgateNodeAgentReportStale",
        "QosgateQuotaNearCapacity",
        "QosgateCertificateExpiresSoon",
    } <= names
    expiry = next(r for r in alerts(monitoring) if r["alert"] == "QosgateCertificateExpiresSoon")
    assert "21 * 86400" in expiry["expr"]


def test_service_monitor_scrapes_every_metrics_service(monitoring: list[Obj]) -> None:
    monitor = one(monitoring, "ServiceMonitor", "qosgate", NAMESPACE)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and set(monitor) == {"apiVersion", "kind", "metadata",
                                                                                    "spec"}
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels"}
    assert "jobLabel" not in spec  # job = the Service's name, which the alerts rely on
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels", "relabelings",
                             "metricRelabelings"}
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"], endpoint["honorLabels"]) == (
        "metrics", "/metrics", "http", True)
    services = kinds(monitoring, "Service")
    selected = {s["metadata"]["name"] for s in services if selector_matches(spec["selector"], s["metadata"]["labels"])
                and s["metadata"]["namespace"] in spec["namespaceSelector"]["matchNames"]}
    assert selected == set(METRICS_SERVICES) == {s["metadata"]["name"] for s in services}


@pytest.mark.parametrize("service_name", sorted(METRICS_SERVICES))
def test_metrics_services_reach_each_pods_health_port(monitoring: list[Obj], base: list[Obj],
                                                      service_name: str) -> None:
    namespace, kind, workload_name = METRICS_SERVICES[service_name]
    service = one(monitoring, "Service", service_name, namespace)
    spec = service["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is True  # standby extender too
    workload = one(base, kind, workload_name, namespace)
    pod = workload["spec"]["template"]
    assert selector_matches({"matchLabels": spec["selector"]}, pod["metadata"]["labels"])
    for other in kinds(base, "Deployment") + kinds(base, "DaemonSet"):
        if other is not workload:
            other_labels = other["spec"]["template"]["metadata"]["labels"]
            assert not selector_matches({"matchLabels": spec["selector"]}, other_labels)
    (port,) = spec["ports"]
    assert port["name"] == "metrics"
    (container,) = pod["spec"]["containers"]
    (target,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert container["livenessProbe"]["httpGet"]["port"] in (target["name"], target["containerPort"])
    assert port["port"] == target["containerPort"]


def test_network_policies_admit_scrapes_of_the_health_ports(base: list[Obj]) -> None:
    for _, kind, name in METRICS_SERVICES.values():
        workload = next(w for w in kinds(base, kind) if w["metadata"]["name"] == name)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        health = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
        policies = [p for p in kinds(base, "NetworkPolicy")
                    if p["metadata"]["namespace"] == workload["metadata"]["namespace"]
                    and selector_matches(p["spec"]["podSelector"], labels)]
        open_rules = [r for p in policies for r in p["spec"].get("ingress", []) if "from" not in r]
        assert any(health in {port["port"] for port in r.get("ports", [])} for r in open_rules), name


def test_alerts_name_the_scrape_jobs_that_exist(monitoring: list[Obj]) -> None:
    jobs = {job for rule in alerts(monitoring) for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert jobs and jobs <= set(METRICS_SERVICES)


# --- promtool --------------------------------------------------------------------------------------------

@pytest.fixture
def rule_files(monitoring: list[Obj], tmp_path: Path) -> Path:
    (tmp_path / "qosgate-rules.yaml").write_text(yaml.safe_dump(the_rule(monitoring)["spec"], sort_keys=False))
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    return tmp_path


def promtool(binaries: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries / "promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def test_promtool_check_rules(control_plane_bin: Path, rule_files: Path) -> None:
    done = promtool(control_plane_bin, "check", "rules", "--lint=all", "--lint-fatal", "qosgate-rules.yaml",
                    cwd=rule_files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests(control_plane_bin: Path, rule_files: Path) -> None:
    done = promtool(control_plane_bin, "test", "rules", PROMTOOL_TESTS.name, cwd=rule_files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_shown_firing_by_a_unit_test(monitoring: list[Obj]) -> None:
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert fired == {r["alert"] for r in alerts(monitoring)}


# --- the metrics queried are the metrics exported ----------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (a small lexer: enough for the expressions shipped here)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if not match.group(2) and match.group(1) not in _KEYWORDS:
            names.add(match.group(1))
    return names


def test_metric_name_lexer() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, verb) (rate(a_bucket{verb=~"filter|bind", x="y(z)"}[5m]))) > 1\n'
            'and on (node) abs(max by (node) (b)) > 0.1 * c offset 5m or vector(0) unless absent(d{j="k"} == 1e3)')
    assert metric_names(expr) == {"a_bucket", "b", "c", "d"}
    assert metric_names('time() - e > 21 * 86400') == {"e"}


def queried_metrics(monitoring: list[Obj]) -> dict[str, set[str]]:
    """metric -> where it is queried (alert names, dashboard panel titles and variables)."""
    where: dict[str, set[str]] = {}
    for rule in alerts(monitoring):
        for name in metric_names(rule["expr"]):
            where.setdefault(name, set()).add(rule["alert"])
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                where.setdefault(name, set()).add(f"panel {panel['title']!r}")
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            (metric,) = re.findall(r"label_values\((\w+),", query["query"])
            where.setdefault(metric, set()).add(f"variable {variable['name']}")
    return where


@pytest.fixture(scope="module")
def local_scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Sample names on /metrics of a running `qosgate serve all --local` after one call to every verb."""
    with launcher(tmp_path_factory.mktemp("serve")) as serve:
        served: ServedProcess = serve.start("--local")
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "namespace": "team-a",
                            "annotations": {"qos-resources.qosgate.io": "memory-qos=gold"}},
               "spec": {"containers": [{"name": "app", "image": "x", "resources": {"requests": {"memory": "1Gi"}}}]}}
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
            "namespace": "team-a", "userInfo": {"username": "alice"}, "object": pod}}
        with https_client(serve.cert_dir, served.ports["webhook"], f"{WEBHOOK}.{NAMESPACE}.svc") as client:
            for path in ("/mutate", "/validate"):
                assert client.post(path, json=review).status_code == 200
        with https_client(serve.cert_dir, served.ports["extender"], f"{EXTENDER}.{NAMESPACE}.svc",
                          client_cert=True) as client:
            nodes = {"items": [{"metadata": {"name": "n1"}, "status": {"allocatable": {"memory": "8Gi"}}}]}
            assert client.post("/filter", json={"Pod": pod, "Nodes": nodes}).status_code == 200
            assert client.post("/prioritize", json={"Pod": pod, "Nodes": nodes}).status_code == 200
        response = served.health("/metrics")
        assert response.status_code == 200
        yield {line.split("{")[0].split(" ")[0] for line in response.text.splitlines()
               if line and not line.startswith("#")}


def defined_in_source(metric: str, folder: str) -> bool:
    bases = {metric, re.sub(r"_(total|bucket|sum|count|created)$", "", metric)}
    pattern = re.compile("|".join(rf'"{re.escape(b)}"' for b in bases))
    return any(pattern.search(path.read_text()) for path in (REPO / folder).rglob("*.py"))


def test_every_queried_metric_is_exported(monitoring: list[Obj], local_scrape: set[str]) -> None:
    problems = []
    for metric, where in sorted(queried_metrics(monitoring).items()):
        if metric in EXTERNAL or metric in local_scrape:
            continue
        if metric in CLUSTER_ONLY:
            component, folder = CLUSTER_ONLY[metric]
            if not defined_in_source(metric, folder):
                problems.append(f"{metric} (queried by {sorted(where)}): {component} does not define it in {folder}/")
            continue
        problems.append(f"{metric} (queried by {sorted(where)}) is exported by nothing qosgate runs")
    assert not problems, "\n".join(problems)


def test_cluster_only_list_holds_no_metric_the_local_server_exports(local_scrape: set[str]) -> None:
    """Keeps the list honest: what `serve --local` shows is checked by scraping, not by reading source."""
    assert not set(CLUSTER_ONLY) & local_scrape


def test_kube_apiserver_exports_the_webhook_rejection_metric() -> None:
    """EXTERNAL's apiserver name, checked in k8s.io/apiserver's source where the Go module cache has it."""
    from tests.manifests.test_second_scheduler import _go_module_cache
    from tests.realcluster.controlplane import read_versions

    cache = _go_module_cache()
    version = read_versions()["KUBERNETES_STAGING_VERSION"]
    source = cache / f"k8s.io/apiserver@{version}/pkg/admission/metrics/metrics.go" if cache else None
    if source is None or not source.is_file():
        pytest.skip(f"k8s.io/apiserver@{version} is not in the Go module cache")
    text = source.read_text()
    assert 'namespace = "apiserver"' in text and 'subsystem = "admission"' in text
    assert '"webhook_rejection_count"' in text and '"calling_webhook_error"' in text


# --- dashboard -------------------------------------------------------------------------------------------

def test_dashboard_configmap_carries_the_file(monitoring: list[Obj]) -> None:
    configmap = one(monitoring, "ConfigMap", "qosgate-dashboard", NAMESPACE)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"qosgate.json": DASHBOARD.read_text()}


def test_dashboard_shape(monitoring: list[Obj]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "qosgate-overview" and dashboard["title"] == "qosgate"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip()
    # The per-node view the issue asks for: protectable, accounted, kernel-protected, drift.
    queried = queried_metrics(monitoring)
    for metric in ("qosgate_node_protectable_bytes", "qosgate_node_accounted_bytes",
                   "qosgate_node_kernel_protected_bytes", "qosgate_node_protection_drift_bytes", "qosgate_quota_used",
                   "qosgate_quota_capacity"):
        assert any(w.startswith("panel") for w in queried[metric]), metric

