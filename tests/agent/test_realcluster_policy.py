"""Proof on a real kube-apiserver (1.37): with the shipped RBAC and ValidatingAdmissionPolicy, the node agent's
pod-bound service-account token on one node writes that node's report Lease — through the agent's own
LeasePublisher — and is refused another node's Lease, the extender's Lease, and everything without a claim."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from qosgate.agent.cluster import LeasePublisher
from qosgate.core.nodereport import NodeReport, lease_name, read_lease
from qosgate.kube.config import load_api_client
from tests.manifests.helpers import BASE
from tests.realcluster.controlplane import ControlPlane, wait_until
from tests.support.kustomize import render

AGENT_NAMESPACE, REPORT_NAMESPACE, SA = "qosgate-node", "qosgate-system", "qosgate-agent"
PATHS = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "ValidatingAdmissionPolicy": "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
}


def agent_objects() -> list[dict]:
    objects = render(BASE)
    wanted = []
    for obj in objects:
        labels = obj["metadata"].get("labels") or {}
        namespace = obj["kind"] == "Namespace" and obj["metadata"]["name"] in (AGENT_NAMESPACE, REPORT_NAMESPACE)
        if namespace or (labels.get("app.kubernetes.io/component") == "agent" and obj["kind"] in PATHS):
            wanted.append(obj)
    return wanted


def apply(cp: ControlPlane, obj: dict) -> None:
    path = PATHS[obj["kind"]].format(ns=obj["metadata"].get("namespace", ""))
    response = cp.api.post(path, json=obj)
    if response.status_code == 409:
        return  # the session's control plane is shared: already installed by an earlier test
    response.raise_for_status()


def report(node: str) -> NodeReport:
    return NodeReport(node=node, observed_at="2026-10-01T12:00:00Z", cgroup_v2=True, memory_controller=True,
                      recursive_prot=True, kubelet_policy="tiered", protectable_bytes=1 << 30,
                      kubepods_min_bytes=0, demanded_bytes=0, kernel_protected_bytes=0, kernel_protected_now_bytes=0,
                      outside_kubepods_min_bytes=0, accounted_bytes=0, drift_bytes=0, overcommit_bytes=0,
                      nri_honoured=None, nri_mismatches=0, offered_classes="memory-qos=gold")


def lease_body(node: str, holder: str | None = None) -> dict:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease_name(node), "namespace": REPORT_NAMESPACE},
            "spec": {"holderIdentity": holder or node, "leaseDurationSeconds": 90}}


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane) -> ControlPlane:
    for obj in agent_objects():
        apply(control_plane, obj)
    return control_plane


def test_each_agent_writes_only_its_own_nodes_report(installed: ControlPlane, tmp_path: Path) -> None:
    cp = installed
    suffix = cp.create_namespace("vapnodes")  # a unique tag for this run's node names
    nodes = {"a": f"{suffix}-a", "b": f"{suffix}-b"}
    for node in nodes.values():
        cp.create_node(node)
        response = cp.api.post(f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods", json={
            "metadata": {"name": f"agent-{node}"},
            "spec": {"serviceAccountName": SA, "nodeName": node,
                     "containers": [{"name": "agent", "image": "registry.invalid/qosgate:0"}]}})
        response.raise_for_status()
    tokens = {k: cp.service_account_token(AGENT_NAMESPACE, SA, pod=f"agent-{n}") for k, n in nodes.items()}
    unbound = cp.service_account_token(AGENT_NAMESPACE, SA)
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{REPORT_NAMESPACE}/leases"

    def post(token: str, body: dict, dry_run: bool = False) -> httpx.Response:
        with cp.http(token=token) as client:
            return client.post(leases, json=body, params={"dryRun": "All"} if dry_run else None)

    # The policy is live once the apiserver's informer has it: wait for the first refusal (dry runs: a probe
    # that got through before that must not leave a Lease behind).
    refused = wait_until(lambda: (r := post(tokens["a"], lease_body(nodes["b"]), True)).status_code == 403 and r,
                         30, "the agent admission policy to take effect", interval=0.25)
    assert f"may only write the Lease qosgate-node-{nodes['a']}" in refused.json()["message"]

    # The agent's own publisher, with node a's pod-bound token, writes node a's report (create, then update).
    api_a = load_api_client(str(cp.service_account_kubeconfig(AGENT_NAMESPACE, SA, pod=f"agent-{nodes['a']}")))
    publisher = LeasePublisher(api_a, nodes["a"], report_interval=30)
    assert publisher.publish(report(nodes["a"]), force=True)
    assert publisher.publish(report(nodes["a"]), force=True)
    stored = cp.api.get(f"{leases}/{lease_name(nodes['a'])}").json()
    assert read_lease(stored, nodes["a"], datetime.now(UTC)).usable

    # Node a's agent cannot publish node b's report, nor take over node b's Lease once b wrote it.
    assert not LeasePublisher(api_a, nodes["b"], report_interval=30).publish(report(nodes["b"]), force=True)
    assert post(tokens["b"], lease_body(nodes["b"])).status_code == 201
    current = cp.api.get(f"{leases}/{lease_name(nodes['b'])}").json()
    with cp.http(token=tokens["a"]) as client:
        hijack = client.put(f"{leases}/{lease_name(nodes['b'])}", json={**current, "spec": {
            **current["spec"], "holderIdentity": nodes["a"]}})
    assert hijack.status_code == 403
    # Nor the extender's leader Lease, nor anything with a token that is not bound to a pod on a node.
    assert post(tokens["a"], {**lease_body(nodes["a"]), "metadata": {
        "name": "qosgate-extender", "namespace": REPORT_NAMESPACE}}).status_code == 403
    no_claim = post(unbound, lease_body(nodes["a"]))
    assert no_claim.status_code == 403 and "bound to its pod" in no_claim.json()["message"]
    # RBAC still applies underneath: no delete at all.
    with cp.http(token=tokens["a"]) as client:
        assert client.delete(f"{leases}/{lease_name(nodes['a'])}").status_code == 403
