"""Every metric the shipped alerts and dashboard query is one qosgate exports in a cluster: scraped from the
running webhook replicas, extender replicas (leader and a follower that relayed a verb) and a node agent on
the real control plane — the figures tests/manifests/test_monitoring.py can only find in the source when it
has no cluster (its CLUSTER_ONLY list)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from tests.agent.faketree import FakeNode
from tests.manifests.helpers import MONITORING
from tests.manifests.test_monitoring import CLUSTER_ONLY, EXTERNAL, queried_metrics
from tests.realcluster.conftest import NodePool
from tests.realcluster.controlplane import ControlPlane
from tests.realcluster.helpers import delete_pods
from tests.realcluster.qosgate_stack import QosgateStack, class_pod
from tests.support.kustomize import render

GI = 2**30


def sample_names(exposition: str) -> set[str]:
    """The metric names with at least one sample (a declared family without samples does not count)."""
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


def relay_one_filter(qosgate: QosgateStack, port: int) -> None:
    """A /filter sent to one extender replica directly (not through the Service)."""
    context = ssl.create_default_context(cafile=str(qosgate.cert_dir / "ca.crt"))
    context.load_cert_chain(str(qosgate.cert_dir / "client.crt"), str(qosgate.cert_dir / "client.key"))
    pod = {"metadata": {"name": "probe", "namespace": "default", "uid": "probe"},
           "spec": {"containers": [{"name": "app", "image": "x"}]}}
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=10, trust_env=False) as client:
        answer = client.post("/filter", json={"Pod": pod, "NodeNames": []})
    assert answer.status_code == 200 and not answer.json().get("Error"), answer.text


def test_every_metric_the_alerts_and_the_dashboard_query_is_scraped_from_the_running_components(
        control_plane: ControlPlane, qosgate: QosgateStack, node_pool: NodePool, tmp_path: Path) -> None:
    cp = control_plane
    (node,) = node_pool.add(1, memory="8Gi")
    tree = FakeNode(tmp_path / node)
    tree.pod("guaranteed", (GI,))  # something for the agent to raise: its write counters move
    namespace = cp.create_namespace("metrics")
    try:
        # A class pod admitted (parked: never scheduled) puts the namespace in the quota ledger.
        cp.api.post(f"/api/v1/namespaces/{namespace}/pods", json=class_pod("gold", "gold")).raise_for_status()
        agent = qosgate.start_agent(node, tree.root, tree.proc)
        leader = qosgate.wait_for_extender_leader()
        followers = [r for r in qosgate.extenders if r is not leader and r.process.running]
        assert followers, "the stack runs two extender replicas"
        relay_one_filter(qosgate, followers[0].port)

        scrapes = {replica.process.name: replica.process.metrics() for replica in qosgate.webhooks + qosgate.extenders}
        scrapes[agent.name] = agent.metrics()
        exported = set().union(*(sample_names(text) for text in scrapes.values()))
        queried = queried_metrics(render(MONITORING))
        missing = {metric: sorted(where) for metric, where in queried.items()
                   if metric not in EXTERNAL and metric not in exported}
        assert not missing, f"queried but exported by no running component: {missing}"
        # The source-only list of the fast layer holds nothing a cluster does not really export.
        assert set(CLUSTER_ONLY) <= exported, sorted(set(CLUSTER_ONLY) - exported)
    finally:
        qosgate.stop_agent(node)
        delete_pods(cp, namespace)
