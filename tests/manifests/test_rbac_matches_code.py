"""The RBAC table is what the running code really calls: each component runs as its own service account
against the fake apiserver with an authorizer enforcing exactly that table (as real RBAC would)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.fakeapi.rest import RequestRecord
from tests.manifests.helpers import EXTENDER, NAMESPACE, WEBHOOK
from tests.manifests.test_rbac import CLUSTER, EXPECTED
from tests.support.processes import ServeLauncher, launcher
from tests.support.tls import eventually, https_client

WEBHOOK_USER = f"system:serviceaccount:{NAMESPACE}:{WEBHOOK}"
EXTENDER_USER = f"system:serviceaccount:{NAMESPACE}:{EXTENDER}"
ACCOUNTS = {WEBHOOK_USER: WEBHOOK, EXTENDER_USER: EXTENDER}
# Grants the short scenario below does not reach, each on a path the code does have:
RARE_PATHS = {
    (EXTENDER, CLUSTER, "", "pods", "get"),  # reading a pod back after an ambiguous (409/timeout) bind
}


def granted(account: str, record: RequestRecord) -> bool:
    resource = f"{record.resource}/{record.subresource}" if record.subresource else record.resource
    scopes = {CLUSTER} | ({record.namespace} if record.namespace else set())
    return any((account, scope, record.api_group, resource, record.verb) == grant[:5]
               for grant in EXPECTED for scope in scopes)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeLauncher]:
    with launcher(tmp_path) as launched:
        yield launched


def test_components_need_exactly_the_granted_permissions(serve, fake_api, tmp_path):
    fake_api.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in (NAMESPACE, "team-a")]
                  + [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
                      "status": {"allocatable": {"memory": "8Gi"}}},
                     {"apiVersion": "v1", "kind": "ConfigMap",  # a quota, so admissions go through the ledger
                      "metadata": {"name": "quota", "namespace": "team-a", "labels": {"qosgate.io/quota": "true"}},
                      "data": {"quota.yaml": "pod:\n- name: memory-qos\n  classes:\n  - {name: gold, capacity: 5}\n"}}])
    for user in ACCOUNTS:
        fake_api.add_user(user, user)
    fake_api.authorizer = lambda user, record: (
        user.username not in ACCOUNTS or granted(ACCOUNTS[user.username], record))
    webhook = serve.start("--kubeconfig", fake_api.write_kubeconfig(str(tmp_path / "w"), token=WEBHOOK_USER),
                          component="webhook")
    extender = serve.start("--kubeconfig", fake_api.write_kubeconfig(str(tmp_path / "e"), token=EXTENDER_USER),
                           "--leader-elect", component="extender")
    ca = (serve.cert_dir / "ca.crt").read_bytes()
    for kind, path in (("mutating", "mutate"), ("validating", "validate")):
        fake_api.add_admission_webhook(f"{path}.qosgate.io", kind=kind, ca_pem=ca,
                                       url=f"https://127.0.0.1:{webhook.ports['webhook']}/{path}",
                                       server_hostname="qosgate-webhook.qosgate-system.svc")
    core = k8s.CoreV1Api(fake_api.api_client())
    pods = [core.create_namespaced_pod("team-a", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"web-{uuid.uuid4().hex[:6]}",
                     "annotations": {"qos-resources.qosgate.io": "memory-qos=gold"}},
        "spec": {"containers": [{"name": "app", "image": "web", "resources": {"requests": {"memory": "1Gi"}}}]}})
        for _ in range(2)]  # the first reservation creates the namespace's ledger, the second updates it
    pod = pods[0]
    pod_json = core.api_client.sanitize_for_serialization(pod)
    with https_client(serve.cert_dir, extender.ports["extender"], "qosgate-extender.qosgate-system.svc",
                      timeout=10, client_cert=True) as client:
        eventually(lambda: client.post("/filter", json={"Pod": pod_json, "NodeNames": ["node-1"]}
                                       ).json().get("NodeNames") == ["node-1"], timeout=30)
        answer = client.post("/bind", json={"PodName": pod.metadata.name, "PodNamespace": "team-a",
                                            "PodUID": pod.metadata.uid, "Node": "node-1"}).json()
    assert answer == {"Error": ""}
    assert core.read_namespaced_pod(pod.metadata.name, "team-a").spec.node_name == "node-1"
    eventually(lambda: any(r.username == EXTENDER_USER and r.resource == "leases" and r.verb == "update"
                           for r in fake_api.requests_log), timeout=30)  # the leader renews its Lease

    used: set[tuple[str, str, str, str, str]] = set()
    for record in fake_api.requests_log:
        account = ACCOUNTS.get(record.username)
        if account is None:
            continue
        assert granted(account, record), f"{account} made a call its RBAC does not grant: {record}"
        resource = f"{record.resource}/{record.subresource}" if record.subresource else record.resource
        scope = CLUSTER if not record.namespace or not any(
            g[:2] == (account, record.namespace) and g[2:5] == (record.api_group, resource, record.verb)
            for g in EXPECTED) else record.namespace
        used.add((account, scope, record.api_group, resource, record.verb))
    # The node agent runs per node and is exercised in tests/agent; here: the webhook and the extender.
    expected = {grant[:5] for grant in EXPECTED if grant[0] in ACCOUNTS.values()}
    assert expected - used - RARE_PATHS == set(), "granted but never needed: drop it or list its rare path"
