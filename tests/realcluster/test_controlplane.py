"""Smoke tests of the real control plane fixture: version, scheduling, RBAC, TokenRequest, admission policy."""

from __future__ import annotations

import base64
import json
import subprocess

import httpx
import pytest

from tests.realcluster.controlplane import ControlPlane, read_versions, wait_until

VERSIONS = read_versions()


def pod(name: str, *, service_account: str | None = None, node: str | None = None,
        memory: str = "64Mi") -> dict:
    spec: dict = {"containers": [{"name": "main", "image": "registry.invalid/pause:1",
                                  "resources": {"requests": {"cpu": "100m", "memory": memory}}}]}
    if service_account:
        spec["serviceAccountName"] = service_account
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def whoami(control_plane: ControlPlane, token: str) -> dict:
    with control_plane.http(token=token) as client:
        response = client.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                               json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return response.raise_for_status().json()["status"]["userInfo"]


def test_apiserver_and_tools_report_the_pinned_versions(control_plane: ControlPlane) -> None:
    assert control_plane.version["gitVersion"] == VERSIONS["KUBERNETES_VERSION"]
    served = json.loads(control_plane.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert served["gitVersion"] == VERSIONS["KUBERNETES_VERSION"]
    bins = control_plane.binaries
    for binary in ("kube-apiserver", "kube-scheduler"):
        out = subprocess.run([str(bins / binary), "--version"], capture_output=True, text=True, check=True).stdout
        assert VERSIONS["KUBERNETES_VERSION"] in out
    etcd = subprocess.run([str(bins / "etcd"), "--version"], capture_output=True, text=True, check=True).stdout
    assert f"etcd Version: {VERSIONS['ETCD_VERSION'].lstrip('v')}" in etcd
    promtool = subprocess.run([str(bins / "promtool"), "--version"], capture_output=True, text=True, check=True)
    assert "promtool, version 3." in promtool.stdout + promtool.stderr


def test_real_scheduler_binds_a_pod_and_survives_a_restart(control_plane: ControlPlane) -> None:
    namespace = control_plane.create_namespace("sched")
    node = f"node-{namespace}"
    control_plane.create_node(node, cpu="2", memory="4Gi", pods=10)
    # The not-ready taint added by TaintNodesByCondition admission is gone, the Ready condition is set.
    stored = control_plane.api.get(f"/api/v1/nodes/{node}").json()
    assert "taints" not in stored["spec"]
    assert {c["type"]: c["status"] for c in stored["status"]["conditions"]}["Ready"] == "True"
    assert stored["status"]["allocatable"]["memory"] == "4Gi"

    with control_plane.start_scheduler() as scheduler:
        control_plane.api.post(f"/api/v1/namespaces/{namespace}/pods", json=pod("first")).raise_for_status()
        assert control_plane.wait_for_pod_bound(namespace, "first") == node
        running = control_plane.set_pod_phase(namespace, "first", "Running")
        assert running["status"]["phase"] == "Running"

        scheduler.restart()
        control_plane.api.post(f"/api/v1/namespaces/{namespace}/pods", json=pod("second")).raise_for_status()
        assert control_plane.wait_for_pod_bound(namespace, "second") == node

    # A pod that fits nowhere stays unbound and the scheduler says why.
    with control_plane.start_scheduler(leader_elect=True):
        control_plane.api.post(f"/api/v1/namespaces/{namespace}/pods",
                               json=pod("too-big", memory="1Ti")).raise_for_status()
        with pytest.raises(TimeoutError, match="Insufficient memory"):
            control_plane.wait_for_pod_bound(namespace, "too-big", timeout=5)


def test_edit_in_one_namespace_cannot_write_in_another(control_plane: ControlPlane) -> None:
    mine, other = control_plane.create_namespace("rbac"), control_plane.create_namespace("rbac")
    control_plane.api.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{mine}/rolebindings", json={
        "metadata": {"name": "alice-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }).raise_for_status()
    alice = control_plane.user_kubeconfig("alice", groups=["developers"])

    control_plane.kubectl("-n", mine, "create", "configmap", "ok", "--from-literal=a=b", kubeconfig=alice)
    refused = control_plane.kubectl("-n", other, "create", "configmap", "no", "--from-literal=a=b",
                                    kubeconfig=alice, check=False)
    assert refused.returncode != 0
    assert 'User "alice" cannot create resource "configmaps"' in refused.stderr
    assert f'in the namespace "{other}"' in refused.stderr


def test_token_request_authenticates_as_the_service_account_with_pod_and_node(control_plane: ControlPlane) -> None:
    namespace = control_plane.create_namespace("token")
    control_plane.api.post(f"/api/v1/namespaces/{namespace}/serviceaccounts",
                           json={"metadata": {"name": "agent"}}).raise_for_status()

    plain = whoami(control_plane, control_plane.service_account_token(namespace, "agent"))
    assert plain["username"] == f"system:serviceaccount:{namespace}:agent"
    assert f"system:serviceaccounts:{namespace}" in plain["groups"]

    node = f"node-{namespace}"
    node_uid = control_plane.create_node(node)["metadata"]["uid"]
    control_plane.api.post(f"/api/v1/namespaces/{namespace}/pods",
                           json=pod("agent-0", service_account="agent", node=node)).raise_for_status()
    token = control_plane.service_account_token(namespace, "agent", pod="agent-0")
    claims = jwt_claims(token)["kubernetes.io"]
    assert claims["pod"]["name"] == "agent-0"
    assert claims["node"] == {"name": node, "uid": node_uid}
    bound = whoami(control_plane, token)
    assert bound["username"] == f"system:serviceaccount:{namespace}:agent"
    assert bound["extra"]["authentication.kubernetes.io/node-name"] == [node]
    assert bound["extra"]["authentication.kubernetes.io/node-uid"] == [node_uid]
    assert bound["extra"]["authentication.kubernetes.io/pod-name"] == ["agent-0"]

    # The kubeconfig form works with kubectl; RBAC still applies to the SA (it has no roles).
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "agent", pod="agent-0")
    denied = control_plane.kubectl("-n", namespace, "get", "pods", kubeconfig=kubeconfig, check=False)
    assert f'"system:serviceaccount:{namespace}:agent" cannot list resource "pods"' in denied.stderr

    # A token bound to a deleted pod stops authenticating. The apiserver caches successful token
    # authentications for 10s, so use a token that was not presented before the delete.
    unused = control_plane.service_account_token(namespace, "agent", pod="agent-0")
    control_plane.api.delete(f"/api/v1/namespaces/{namespace}/pods/agent-0",
                             params={"gracePeriodSeconds": 0}).raise_for_status()
    with pytest.raises(httpx.HTTPStatusError) as refused:
        whoami(control_plane, unused)
    assert refused.value.response.status_code == 401


def test_validating_admission_policy_is_enforced(control_plane: ControlPlane) -> None:
    namespace = control_plane.create_namespace("vap", labels={"qosgate-test/vap": "on"})
    name = f"no-forbidden-key-{namespace}"
    control_plane.api.post("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies", json={
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                    "operations": ["CREATE", "UPDATE"],
                                                    "resources": ["configmaps"]}]},
            "validations": [{"expression": "!has(object.data) || !('forbidden' in object.data)",
                             "message": "configmaps may not carry the key 'forbidden'"}],
        },
    }).raise_for_status()
    control_plane.api.post("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings", json={
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"qosgate-test/vap": "on"}}}},
    }).raise_for_status()

    def denied() -> httpx.Response | None:
        response = control_plane.api.post(f"/api/v1/namespaces/{namespace}/configmaps", json={
            "metadata": {"generateName": "probe-"}, "data": {"forbidden": "x"}})
        return response if response.status_code != 201 else None

    # The policy takes effect once the apiserver's policy informer has it (about a second).
    response = wait_until(denied, 20, "the ValidatingAdmissionPolicy to take effect", interval=0.25)
    assert response.status_code in (403, 422)
    assert "configmaps may not carry the key 'forbidden'" in response.json()["message"]
    allowed = control_plane.api.post(f"/api/v1/namespaces/{namespace}/configmaps",
                                     json={"metadata": {"name": "fine"}, "data": {"ok": "x"}})
    assert allowed.status_code == 201
