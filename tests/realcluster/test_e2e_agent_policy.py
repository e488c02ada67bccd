"""The node agent's reach on the real server (architecture §6.3): its ServiceAccount may write Leases in
qosgate-system (manifests/base/agent-rbac.yaml), and the shipped ValidatingAdmissionPolicy
(agent-admissionpolicy.yaml, CEL evaluated by kube-apiserver — tests/fakeapi has no policies) narrows that to
the one report Lease of the node its pod-bound token names. No agent process is needed: the test writes
what an agent on node X would write, with the token kubelet would project into the agent's pod. The agent's
catalog watch runs the agent's own code (qosgate.kube.catalog) with the agent's token: RBAC pins it to the
catalog ConfigMap by name, which kube-apiserver honours for list/watch only with that field selector.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import yaml

from qosgate.kube.catalog import CatalogSource, open_catalog
from qosgate.kube.kubeconfig import ClientConfig
from qosgate.kube.transport import KubeClient
from tests.realcluster.conftest import NodePool
from tests.realcluster.controlplane import ControlPlane, wait_until
from tests.realcluster.helpers import put_catalog
from tests.realcluster.qosgate_stack import QosgateStack

LEASES = "/apis/coordination.k8s.io/v1/namespaces/qosgate-system/leases"


def lease(name: str, holder: str) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 90}}


def test_an_agent_token_writes_only_its_own_nodes_report_lease(
        control_plane: ControlPlane, qosgate: QosgateStack, node_pool: NodePool) -> None:
    here, there = node_pool.add(2, memory="8Gi")
    agent = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"agent-{here}"},
             "spec": {"serviceAccountName": "qosgate-agent", "nodeName": here,
                      "containers": [{"name": "agent", "image": "registry.invalid/qosgate:1"}]}}
    control_plane.api.post("/api/v1/namespaces/qosgate-node/pods", json=agent).raise_for_status()
    try:
        token = control_plane.service_account_token("qosgate-node", "qosgate-agent", pod=f"agent-{here}")
        with control_plane.http(token=token) as as_agent:
            def refused_elsewhere() -> Any:
                answer = as_agent.post(LEASES, json=lease(f"qosgate-node-{there}", there))
                return answer if answer.status_code != 201 else None

            # The policy is active once kube-apiserver's policy informer has it (installed with the stack).
            elsewhere = wait_until(refused_elsewhere, 20, "the agent policy to refuse another node's Lease")
            assert elsewhere.status_code == 403
            assert elsewhere.json()["message"].endswith(
                f"the qosgate agent of node {here} may only write the Lease qosgate-node-{here}, not "
                f"qosgate-node-{there}")
            own = as_agent.post(LEASES, json=lease(f"qosgate-node-{here}", here))
            assert own.status_code == 201, own.text
            stolen = own.json()
            stolen["spec"]["holderIdentity"] = there
            refused = as_agent.put(f"{LEASES}/qosgate-node-{here}", json=stolen)
            assert refused.status_code == 403
            assert "a node report Lease must be held by the agent's own node" in refused.json()["message"]
            leader = as_agent.put(f"{LEASES}/qosgate-extender", json=qosgate.lease())
            assert leader.status_code == 403  # the extender's Lease is not a report of this node
            assert as_agent.delete(f"{LEASES}/qosgate-node-{here}").status_code == 403  # RBAC: no delete

        unbound = control_plane.service_account_token("qosgate-node", "qosgate-agent")
        with control_plane.http(token=unbound) as without_pod:
            answer = without_pod.post(LEASES, json=lease(f"qosgate-node-{here}-2", here))
            assert answer.status_code == 403
            assert "must use a token bound to its pod" in answer.json()["message"]
    finally:
        control_plane.api.delete(f"/api/v1/namespaces/qosgate-node/pods/agent-{here}",
                                 params={"gracePeriodSeconds": "0"})
        control_plane.api.delete(f"{LEASES}/qosgate-node-{here}")


def test_an_agent_token_follows_the_catalog_configmap_and_lists_no_other(
        control_plane: ControlPlane, qosgate: QosgateStack) -> None:
    token = control_plane.service_account_token("qosgate-node", "qosgate-agent")
    api = KubeClient(ClientConfig(server=control_plane.url, ca_file=str(control_plane.ca_file), token=token))
    stoppers: list[Callable[[], object]] = []
    original = qosgate.rendered("ConfigMap", "qosgate-classes")
    try:
        holder = open_catalog(CatalogSource(), api, stoppers.append, sync_timeout=20)
        assert holder.source == "configmap qosgate-system/qosgate-classes"
        shipped = yaml.safe_load(original["data"]["catalog.yaml"])["protectablePercent"]
        assert holder.current.protectable_percent == shipped

        edited = copy.deepcopy(original)
        document = yaml.safe_load(edited["data"]["catalog.yaml"])
        document["protectablePercent"] = shipped - 20
        edited["data"]["catalog.yaml"] = yaml.safe_dump(document)
        put_catalog(control_plane, qosgate, edited)
        wait_until(lambda: holder.current.protectable_percent == shipped - 20, 20,
                   "the agent's catalog watch to see the edit")

        with control_plane.http(token=token) as as_agent:
            everything = as_agent.get("/api/v1/namespaces/qosgate-system/configmaps")
            assert everything.status_code == 403  # only the catalog, by name
            other = as_agent.get("/api/v1/namespaces/qosgate-system/configmaps",
                                 params={"fieldSelector": "metadata.name=qosgate-default-quota"})
            assert other.status_code == 403
    finally:
        for stop in stoppers:
            stop()
        put_catalog(control_plane, qosgate, original)
