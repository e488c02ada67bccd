"""`kubectl qosgate status` on a seeded real control plane: 50 nodes, 2,000 pods created through the real
admission chain and placed by kube-scheduler with the extender, node reports written as the agent writes them.

The figures it prints must be the cluster's: per node the Σ memory.min of the class pods bound there, the
kernel figure and drift from the node's report; per namespace the gold pods against the quota; the
extender's leader. A sample of the text view and the command's time land in the "real control plane
figures" section of the pytest summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from qosgate.core.nodereport import NodeReport, lease_object
from tests.realcluster.conftest import NodePool
from tests.realcluster.controlplane import ControlPlane, Scheduler, wait_until
from tests.realcluster.helpers import FIGURES, delete_pods
from tests.realcluster.qosgate_stack import QosgateStack, class_pod, quota_configmap

NODES, PODS, NAMESPACES = 50, 2000, 4
MI = 2**20
GOLD_MI = 256
PROTECTABLE = 8 * 1024 * MI


@pytest.fixture(scope="module")
def scheduler(control_plane: ControlPlane, qosgate: QosgateStack) -> Iterator[Scheduler]:
    with control_plane.start_scheduler(qosgate.scheduler_config()) as running:
        yield running


def report(node: str, accounted: int, drift: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    values = NodeReport(node=node, observed_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"), cgroup_v2=True,
                        memory_controller=True, recursive_prot=True, kubelet_policy="none",
                        protectable_bytes=PROTECTABLE, kubepods_min_bytes=accounted - drift,
                        demanded_bytes=accounted - drift, kernel_protected_bytes=accounted - drift,
                        kernel_protected_now_bytes=accounted - drift, outside_kubepods_min_bytes=0,
                        accounted_bytes=accounted, drift_bytes=drift, overcommit_bytes=0, nri_honoured=True,
                        nri_mismatches=0, offered_classes=None)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            **lease_object(values, now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), 90)}


def status(cp: ControlPlane, *argv: str) -> tuple[str, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "qosgate.cli.main", "status", "--kubeconfig",
                           str(cp.admin_kubeconfig), *argv], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout, time.monotonic() - started


def test_status_shows_the_clusters_own_figures_on_50_nodes_and_2000_pods(
        control_plane: ControlPlane, qosgate: QosgateStack, scheduler: Scheduler, node_pool: NodePool) -> None:
    cp = control_plane
    nodes = node_pool.add(NODES, memory="64Gi", protectable=f"{PROTECTABLE // MI}Mi")
    namespaces = [cp.create_namespace("status") for _ in range(NAMESPACES)]
    for namespace in namespaces:
        cp.api.post(f"/api/v1/namespaces/{namespace}/configmaps",
                    json=quota_configmap("quota", 400)).raise_for_status()
    try:
        with ThreadPoolExecutor(16) as pool, cp.http() as client:
            def create(index: int) -> None:
                namespace = namespaces[index % NAMESPACES]
                klass = "gold" if (index // NAMESPACES) % 2 else None  # half of each namespace's pods
                body = node_pool.pin(class_pod(f"p-{index}", klass, memory=f"{GOLD_MI}Mi"))
                for _ in range(20):  # a retryable 503 (a webhook replica busy) is resent, as controllers do
                    response = client.post(f"/api/v1/namespaces/{namespace}/pods", json=body)
                    if response.status_code != 503:
                        break
                    time.sleep(0.2)
                assert response.status_code == 201, response.text

            list(pool.map(create, range(PODS)))

        def bound() -> list[dict[str, Any]]:
            pods = [p for namespace in namespaces
                    for p in cp.api.get(f"/api/v1/namespaces/{namespace}/pods").raise_for_status().json()["items"]]
            return pods if all(p["spec"].get("nodeName") for p in pods) else []

        pods = wait_until(bound, 300, f"{PODS} pods bound")
        accounted: Counter[str] = Counter()
        gold: Counter[str] = Counter()
        for pod in pods:
            figure = int((pod["metadata"].get("annotations") or {}).get("qosgate.io/memory-min", "0"))
            accounted[pod["spec"]["nodeName"]] += figure
            gold[pod["metadata"]["namespace"]] += 1 if figure else 0
        assert sum(gold.values()) == PODS // 2

        drifting = nodes[0]
        for node in nodes:
            lease = report(node, accounted[node], GOLD_MI * MI if node == drifting else 0)
            response = cp.api.post(f"/apis/coordination.k8s.io/v1/namespaces/{lease['metadata']['namespace']}/leases",
                                   json=lease)
            if response.status_code == 409:  # a report from an earlier run of this node name: replace it
                name = lease["metadata"]["name"]
                path = f"/apis/coordination.k8s.io/v1/namespaces/{lease['metadata']['namespace']}/leases/{name}"
                lease["metadata"]["resourceVersion"] = cp.api.get(path).json()["metadata"]["resourceVersion"]
                response = cp.api.put(path, json=lease)
            response.raise_for_status()

        selector = f"{NodePool.LABEL}={node_pool.name}"
        out, seconds = status(cp, "-l", selector, "--limit", "0", "-o", "json")
        shown = json.loads(out)
        rows = {row["name"]: row for row in shown["nodes"]}
        assert set(rows) == set(nodes)
        for node in nodes:
            assert rows[node]["protectable"] == PROTECTABLE
            assert rows[node]["accounted"] == accounted[node], node
            assert rows[node]["report"] == "fresh"
        assert rows[drifting]["drift"] == GOLD_MI * MI
        headrooms = [row["headroom"] for row in shown["nodes"]]
        assert headrooms == sorted(headrooms)  # tightest first
        quotas = {row["namespace"]: row for row in shown["namespaces"] if row["namespace"] in namespaces}
        for namespace in namespaces:
            (gold_row,) = [c for c in quotas[namespace]["classes"] if c["class"] == "gold"]
            assert (gold_row["used"], gold_row["capacity"]) == (gold[namespace], 400)
        assert shown["extender"]["leader"] in {replica.process.name for replica in qosgate.extenders}

        text, text_seconds = status(cp, "-l", selector, "--limit", "6")
        plugin = Path(sys.executable).parent / "kubectl-qosgate"
        if plugin.exists():  # kubectl finds the plugin on PATH, next to the interpreter that installed qosgate
            env_path = f"{plugin.parent}{os.pathsep}{os.environ.get('PATH', '')}"
            done = subprocess.run(["kubectl", "qosgate", "status", "-l", selector, "--limit", "0"],
                                  capture_output=True, text=True,
                                  timeout=120, check=False,
                                  env={**os.environ, "PATH": env_path, "KUBECONFIG": str(cp.admin_kubeconfig)})
            assert done.returncode == 0, done.stderr
            assert drifting in done.stdout
        FIGURES.append(f"qosgate status on {NODES} nodes / {PODS} pods: -o json {seconds:.2f} s, "
                       f"text {text_seconds:.2f} s; sample (kubectl qosgate status):")
        FIGURES.extend("  " + line for line in text.splitlines()[:40])
    finally:
        for namespace in namespaces:
            delete_pods(cp, namespace)
