"""What tests/fakeapi claims, checked against the fake AND the real kube-apiserver with the same test bodies.

Every test takes `server`, parametrized over `fake` (tests/fakeapi.FakeAPIServer, module-scoped) and `real`
(the session's kube-apiserver 1.37). Each test works in a fresh namespace; webhooks are registered for that
namespace only (on the real server as Mutating/ValidatingWebhookConfigurations with a namespaceSelector and
a loopback `url`, waited for until kube-apiserver calls them). Behaviour that differs is asserted per server
and listed in tests/fakeapi/README.md ("Checked against kube-apiserver 1.37"); a difference the fake should
not have is a strict xfail on the fake.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from kubernetes import client, config

from tests.fakeapi import FakeAPIServer
from tests.fakeapi.tlswebhook import SERVICE_HOST, RawReply, WebhookServer, make_tls, patch_response

MERGE = {"Content-Type": "application/merge-patch+json"}
JSONP = {"Content-Type": "application/json-patch+json"}
SMP = {"Content-Type": "application/strategic-merge-patch+json"}
APPLY = {"Content-Type": "application/apply-patch+yaml"}
PODS_CU = [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE", "UPDATE"]}]
PROBE_LABEL = "conformance-probe"
TLS = make_tls((SERVICE_HOST, "127.0.0.1"))  # the fake dials the IP with SNI; the real one verifies the IP

Handler = Callable[[dict[str, Any]], Any]


# ----------------------------------------------------------------------------------------------- the server


@dataclass
class Server:
    kind: str  # "fake" | "real"
    raw: httpx.Client  # admin
    namespace: str
    api_client: client.ApiClient
    user: dict[str, Any]  # userInfo of `raw` as webhooks see it
    fake: FakeAPIServer | None = None
    cp: Any = None
    request: Any = None  # the pytest request, for markers applied at run time
    routes: dict[str, Handler] = field(default_factory=dict)
    hook: WebhookServer | None = None
    registered: list[str] = field(default_factory=list)

    @property
    def real(self) -> bool:
        return self.kind == "real"

    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    def path(self, resource: str, name: str = "") -> str:
        base = f"/api/v1/namespaces/{self.namespace}/{resource}"
        return f"{base}/{name}" if name else base

    def hook_name(self, short: str) -> str:
        """A webhook name: the real server wants a qualified name with at least three segments."""
        return f"{short}.conformance.qosgate.test"

    # -- webhooks

    def webhook_server(self) -> WebhookServer:
        if self.hook is None:
            def handler(path: str, req: dict[str, Any]) -> Any:
                labels = ((req.get("object") or {}).get("metadata") or {}).get("labels") or {}
                if PROBE_LABEL in labels:
                    return {"allowed": True}
                fn = self.routes.get(path)
                return fn(req) if fn else {"allowed": True}

            self.hook = WebhookServer(handler, TLS).__enter__()
        return self.hook

    def received(self, path: str | None = None) -> list[dict[str, Any]]:
        assert self.hook is not None
        return [r for r in self.hook.received(path)
                if PROBE_LABEL not in (((r.get("object") or {}).get("metadata") or {}).get("labels") or {})]

    def register(self, short: str, kind: str, path: str, *, rules: list[dict[str, Any]] | None = None,
                 failure_policy: str = "Fail", timeout_seconds: int = 10, side_effects: str = "None",
                 reinvocation_policy: str = "Never", object_selector: dict[str, Any] | None = None,
                 url: str | None = None, ca_pem: bytes | None = None) -> None:
        """Register one webhook (served by this test's WebhookServer unless `url` is given)."""
        hook = self.webhook_server()
        url = url or hook.url(path)
        ca_pem = ca_pem or TLS.ca_pem
        rules = rules or PODS_CU
        if not self.real:
            assert self.fake is not None
            self.fake.add_admission_webhook(self.hook_name(short), kind=kind, url=url, ca_pem=ca_pem,
                                            server_hostname=SERVICE_HOST, rules=rules, failure_policy=failure_policy,
                                            timeout_seconds=timeout_seconds, side_effects=side_effects,
                                            reinvocation_policy=reinvocation_policy, object_selector=object_selector)
            self.registered.append(self.hook_name(short))
            return
        selector = json.loads(json.dumps(object_selector or {}))
        selector.setdefault("matchExpressions", []).append({"key": PROBE_LABEL, "operator": "DoesNotExist"})
        webhook: dict[str, Any] = {
            "name": self.hook_name(short), "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
            "rules": rules, "failurePolicy": failure_policy, "sideEffects": side_effects,
            "timeoutSeconds": timeout_seconds, "objectSelector": selector,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}},
        }
        if kind == "mutating":
            webhook["reinvocationPolicy"] = reinvocation_policy
        # The probe entry comes first: once kube-apiserver calls it, it has loaded the whole configuration.
        probe = {"name": "probe.conformance.qosgate.test", "admissionReviewVersions": ["v1"],
                 "clientConfig": {"url": hook.url("/probe"), "caBundle": base64.b64encode(TLS.ca_pem).decode()},
                 "rules": PODS_CU, "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 5,
                 "objectSelector": {"matchExpressions": [{"key": PROBE_LABEL, "operator": "Exists"}]},
                 "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}}}
        name = f"conformance-{self.namespace}-{len(self.registered)}"
        resource = "mutatingwebhookconfigurations" if kind == "mutating" else "validatingwebhookconfigurations"
        body = {"apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration" if kind == "mutating" else "ValidatingWebhookConfiguration",
                "metadata": {"name": name}, "webhooks": [probe, webhook]}
        self.raw.post(f"/apis/admissionregistration.k8s.io/v1/{resource}", json=body).raise_for_status()
        self.registered.append(f"{resource}/{name}")
        marker = uuid.uuid4().hex[:8]
        deadline = time.monotonic() + 30
        while not any((((r.get("object") or {}).get("metadata") or {}).get("labels") or {}).get(PROBE_LABEL)
                      == marker for r in hook.received("/probe")):
            assert time.monotonic() < deadline, "kube-apiserver never called the registered webhook"
            self.raw.post(self.path("pods"), params={"dryRun": "All"},
                          json=pod(f"probe-{marker}", labels={PROBE_LABEL: marker}))
            time.sleep(0.1)

    def unregister_all(self) -> None:
        for entry in self.registered:
            if self.real:
                self.raw.delete(f"/apis/admissionregistration.k8s.io/v1/{entry}")
            else:
                assert self.fake is not None
                self.fake.remove_admission_webhook(entry)
        self.registered.clear()
        if self.hook is not None:
            self.hook.__exit__(None, None, None)
            self.hook = None


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeAPIServer, client.ApiClient]]:
    with FakeAPIServer() as api:
        path = api.write_kubeconfig(tmp_path_factory.mktemp("fake") / "kubeconfig", token="admin")
        yield api, config.new_client_from_config(config_file=path)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real_cluster)])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    namespace = f"conf-{uuid.uuid4().hex[:8]}"
    if request.param == "fake":
        api, api_client = request.getfixturevalue("fake_server")
        raw = httpx.Client(base_url=api.url, headers={"Authorization": "Bearer admin"}, trust_env=False, timeout=30)
        raw.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}).raise_for_status()
        user = {"username": "admin", "groups": ["system:masters", "system:authenticated"]}
        srv = Server("fake", raw, namespace, api_client, user, fake=api)
    else:
        cp = request.getfixturevalue("control_plane")
        namespace = cp.create_namespace("conf")
        raw = cp.http()
        api_client = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))
        user = {"username": "qosgate-test-admin", "groups": ["system:masters", "system:authenticated"]}
        srv = Server("real", raw, namespace, api_client, user, cp=cp)
    srv.request = request
    try:
        yield srv
    finally:
        srv.unregister_all()
        raw.close()


def pod(name: str = "", *, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        memory: str = "", generate_name: str = "", phase: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if name:
        meta["name"] = name
    if generate_name:
        meta["generateName"] = generate_name
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    container: dict[str, Any] = {"name": "app", "image": "registry.example/app:1.0"}
    if memory:
        container["resources"] = {"requests": {"memory": memory}}
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [container]}}
    if phase:
        obj["status"] = {"phase": phase}
    return obj


def configmap(name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data or {}}


def binding(name: str, node_name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}


def fake_differs(server: Server, reason: str) -> None:
    """Mark the fake's run of this test as a known difference (README) — strict: it must still fail there."""
    if not server.real:
        server.request.applymarker(pytest.mark.xfail(strict=True,
                                                     reason=f"known difference of tests/fakeapi: {reason}"))


# ----------------------------------------------------------------------------------------------- CRUD


def test_not_found_status_body(server: Server) -> None:
    r = server.raw.get(server.path("pods", "web"))
    assert r.status_code == 404
    assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": 'pods "web" not found', "reason": "NotFound",
                        "details": {"name": "web", "kind": "pods"}, "code": 404}


def test_pods_answer_delete_with_the_object_and_configmaps_with_a_success_status(server: Server) -> None:
    server.raw.post(server.path("pods"), json=pod("p")).raise_for_status()
    gone = server.raw.delete(server.path("pods", "p"), params={"gracePeriodSeconds": "0"}).json()
    assert gone["kind"] == "Pod" and gone["metadata"]["name"] == "p"
    server.raw.post(server.path("configmaps"), json=configmap("cm")).raise_for_status()
    body = server.raw.delete(server.path("configmaps", "cm")).json()
    assert body["kind"] == "Status" and body["status"] == "Success"
    assert body["details"]["name"] == "cm" and body["details"]["kind"] == "configmaps" and body["details"]["uid"]


def test_already_exists_and_group_qualified_not_found(server: Server) -> None:
    server.raw.post(server.path("configmaps"), json=configmap("a")).raise_for_status()
    again = server.raw.post(server.path("configmaps"), json=configmap("a"))
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"
    assert again.json()["message"] == 'configmaps "a" already exists'
    missing = server.raw.get(f"/apis/apps/v1/namespaces/{server.namespace}/deployments/nope").json()
    assert missing["message"] == 'deployments.apps "nope" not found'
    assert missing["details"] == {"name": "nope", "kind": "deployments", "group": "apps"}


def test_generate_name_appends_five_characters_and_a_missing_name_is_invalid(server: Server) -> None:
    names = {server.raw.post(server.path("pods"), json=pod(generate_name="worker-")).json()["metadata"]["name"]
             for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("worker-") and len(n) == len("worker-") + 5 for n in names)
    r = server.raw.post(server.path("pods"), json=pod())
    assert r.status_code == 422 and r.json()["reason"] == "Invalid"
    assert "name or generateName is required" in r.json()["message"]


def test_stale_update_conflicts_with_the_upstream_message(server: Server) -> None:
    first = server.raw.post(server.path("configmaps"), json=configmap("cfg", {"a": "1"})).json()
    second = json.loads(json.dumps(first))
    first["data"] = {"a": "2"}
    server.raw.put(server.path("configmaps", "cfg"), json=first).raise_for_status()
    second["data"] = {"a": "3"}
    r = server.raw.put(server.path("configmaps", "cfg"), json=second)
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"
    assert r.json()["message"] == ('Operation cannot be fulfilled on configmaps "cfg": the object has been modified; '
                                   "please apply your changes to the latest version and try again")


def test_unconditional_update_missing_object_and_name_mismatch(server: Server) -> None:
    server.raw.post(server.path("configmaps"), json=configmap("x", {"k": "1"})).raise_for_status()
    r = server.raw.put(server.path("configmaps", "x"), json=configmap("x", {"k": "2"}))
    assert r.status_code == 200 and r.json()["data"] == {"k": "2"}
    assert server.raw.put(server.path("configmaps", "ghost"), json=configmap("ghost")).status_code == 404
    r = server.raw.put(server.path("configmaps", "x"), json=configmap("other"))
    assert r.status_code == 400 and "does not match the name on the URL" in r.json()["message"]


def test_noop_update_keeps_the_resource_version(server: Server) -> None:
    cm = server.raw.post(server.path("configmaps"), json=configmap("same", {"k": "v"})).json()
    again = server.raw.put(server.path("configmaps", "same"), json=cm).json()
    assert again["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]


def test_delete_preconditions(server: Server) -> None:
    cm = server.raw.post(server.path("configmaps"), json=configmap("pre")).json()
    r = server.raw.request("DELETE", server.path("configmaps", "pre"),
                           json={"kind": "DeleteOptions", "apiVersion": "v1",
                                 "preconditions": {"resourceVersion": "1"}})
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"
    r = server.raw.request("DELETE", server.path("configmaps", "pre"), json={
        "preconditions": {"resourceVersion": cm["metadata"]["resourceVersion"], "uid": cm["metadata"]["uid"]}})
    assert r.status_code == 200


def test_a_failed_delete_precondition_names_both_resource_versions(server: Server) -> None:
    fake_differs(server, "the precondition message is worded differently ('Precondition failed: ...')")
    cm = server.raw.post(server.path("configmaps"), json=configmap("pre")).json()
    r = server.raw.request("DELETE", server.path("configmaps", "pre"), json={"preconditions": {"resourceVersion": "1"}})
    assert r.json()["message"] == (
        'Operation cannot be fulfilled on ConfigMap "pre": the ResourceVersion in the precondition (1) does not match '
        f'the ResourceVersion in record ({cm["metadata"]["resourceVersion"]}). The object might have been modified')


def test_a_missing_namespace_is_404_and_the_body_namespace_must_match(server: Server) -> None:
    r = server.raw.post("/api/v1/namespaces/no-such-namespace/pods", json=pod("p"))
    assert r.status_code == 404 and r.json()["message"] == 'namespaces "no-such-namespace" not found'
    body = pod("p")
    body["metadata"]["namespace"] = "kube-system"
    r = server.raw.post(server.path("pods"), json=body)
    assert r.status_code == 400
    assert r.json()["message"] == ("the namespace of the provided object does not match the namespace sent on "
                                   "the request")


def test_namespace_deletion_removes_its_contents(server: Server) -> None:
    fake_differs(server, "namespace deletion is synchronous")
    server.raw.post(server.path("configmaps"), json=configmap("c")).raise_for_status()
    deleted = server.raw.delete(f"/api/v1/namespaces/{server.namespace}").json()
    # Without kube-controller-manager's namespace controller it stays Terminating, contents and all.
    assert deleted["status"]["phase"] == "Terminating"
    assert server.raw.get(server.path("configmaps", "c")).status_code == 200


def test_pod_defaults_and_qos_class(server: Server) -> None:
    burstable = server.raw.post(server.path("pods"), json=pod("b", memory="64Mi")).json()
    assert burstable["status"]["qosClass"] == "Burstable"
    assert server.raw.post(server.path("pods"), json=pod("be")).json()["status"]["qosClass"] == "BestEffort"
    guaranteed = pod("g")
    guaranteed["spec"]["containers"][0]["resources"] = {"limits": {"memory": "1Gi", "cpu": "500m"}}
    g = server.raw.post(server.path("pods"), json=guaranteed).json()
    assert g["status"]["qosClass"] == "Guaranteed"
    container = g["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"memory": "1Gi", "cpu": "500m"}  # defaulted from limits
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    spec = g["spec"]
    assert (spec["schedulerName"], spec["restartPolicy"], spec["dnsPolicy"], spec["terminationGracePeriodSeconds"],
            spec["enableServiceLinks"]) == ("default-scheduler", "Always", "ClusterFirst", 30, True)


def test_quantities_are_canonicalised(server: Server) -> None:
    fake_differs(server, "quantities are stored as written")
    created = server.raw.post(server.path("pods"), json=pod("q", memory="1024Mi")).json()
    assert created["spec"]["containers"][0]["resources"]["requests"]["memory"] == "1Gi"


def test_user_status_is_ignored_on_create_and_main_update(server: Server) -> None:
    created = server.raw.post(server.path("pods"), json=pod("s", phase="Running")).json()
    assert created["status"]["phase"] == "Pending"
    created["status"]["phase"] = "Running"
    updated = server.raw.put(server.path("pods", "s"), json=created).json()
    assert updated["status"]["phase"] == "Pending"
    assert updated["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    via_status = server.raw.put(server.path("pods", "s") + "/status", json=created).json()
    assert via_status["status"]["phase"] == "Running"
    assert int(via_status["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_pod_spec_is_immutable_except_images(server: Server) -> None:
    created = server.raw.post(server.path("pods"), json=pod("imm")).json()
    created["spec"]["containers"][0]["image"] = "registry.example/app:2.0"
    ok = server.raw.put(server.path("pods", "imm"), json=created)
    assert ok.status_code == 200
    assert (created["metadata"]["generation"], ok.json()["metadata"]["generation"]) == (1, 2)
    changed = ok.json()
    changed["spec"]["nodeName"] = "n1"
    r = server.raw.put(server.path("pods", "imm"), json=changed)
    assert r.status_code == 422 and r.json()["reason"] == "Invalid"
    assert "pod updates may not change fields" in r.json()["message"]


def test_unknown_fields_warn_by_default_and_fail_when_strict(server: Server) -> None:
    body = pod("u")
    body["spec"]["qosResources"] = [{"name": "memory-qos", "class": "gold"}]
    r = server.raw.post(server.path("pods"), json=body)
    assert r.status_code == 201 and "qosResources" not in r.json()["spec"]
    assert r.headers.get_list("warning") == ['299 - "unknown field \\"spec.qosResources\\""']
    body["metadata"]["name"] = "u2"
    r = server.raw.post(server.path("pods"), params={"fieldValidation": "Strict"}, json=body)
    assert r.status_code == 400
    if server.real:
        assert r.json()["message"] == ('Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
                                       'unknown field "spec.qosResources"')
    else:
        assert r.json()["message"] == 'strict decoding error: unknown field "spec.qosResources"'


def test_strict_decoding_error_names_the_kind(server: Server) -> None:
    fake_differs(server, "the Strict error lacks the 'Pod in version \"v1\" cannot be handled as a Pod:' prefix")
    body = pod("u")
    body["spec"]["qosResources"] = []
    r = server.raw.post(server.path("pods"), params={"fieldValidation": "Strict"}, json=body)
    assert r.json()["message"].startswith('Pod in version "v1" cannot be handled as a Pod: strict decoding error:')


def test_wrongly_typed_values_fail_decoding(server: Server) -> None:
    body = pod("t", annotations={"x": "1"})
    body["metadata"]["annotations"]["x"] = 1
    r = server.raw.post(server.path("pods"), json=body)
    assert r.status_code == 400
    assert "cannot unmarshal number into Go struct field ObjectMeta.metadata.annotations" in r.json()["message"]


def test_invalid_annotation_key_is_rejected(server: Server) -> None:
    r = server.raw.post(server.path("pods"), json=pod("k", annotations={"bad key": "v"}))
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "metadata.annotations"


def test_dry_run_create_stores_nothing(server: Server) -> None:
    out = server.raw.post(server.path("pods"), params={"dryRun": "All"}, json=pod(generate_name="dry-")).json()
    assert out["metadata"]["name"].startswith("dry-") and out["metadata"]["uid"]
    assert server.raw.get(server.path("pods")).json()["items"] == []


def test_finalizers_hold_deletion_until_removed(server: Server) -> None:
    cm = configmap("fin")
    cm["metadata"]["finalizers"] = ["example.com/hold"]
    server.raw.post(server.path("configmaps"), json=cm).raise_for_status()
    marked = server.raw.delete(server.path("configmaps", "fin")).json()
    assert marked["kind"] == "ConfigMap" and marked["metadata"]["deletionTimestamp"]
    r = server.raw.patch(server.path("configmaps", "fin"), content=b'{"metadata":{"finalizers":null}}', headers=MERGE)
    assert r.status_code == 200
    assert server.raw.get(server.path("configmaps", "fin")).status_code == 404


def test_bound_pods_are_deleted_immediately(server: Server) -> None:
    """Without a kubelet a bound pod's graceful delete never completes on the real server."""
    fake_differs(server, "pods are deleted immediately (no graceful termination)")
    server.raw.post(server.path("pods"), json=pod("g")).raise_for_status()
    server.raw.post(server.path("pods", "g") + "/binding", json=binding("g", "n1")).raise_for_status()
    answer = server.raw.delete(server.path("pods", "g")).json()
    assert answer["metadata"]["deletionTimestamp"] and answer["metadata"]["deletionGracePeriodSeconds"] == 30
    assert server.raw.get(server.path("pods", "g")).status_code == 200  # Terminating, waiting for the kubelet


# ----------------------------------------------------------------------------------------------- lists


def seed_pods(server: Server) -> None:
    for name, labels in (("a", {"app": "web", "tier": "front"}), ("b", {"app": "web", "tier": "back"}),
                         ("c", {"app": "db"}), ("e", {"version": "7"})):
        server.raw.post(server.path("pods"), json=pod(name, labels=labels)).raise_for_status()
    server.raw.post(server.path("pods", "a") + "/binding", json=binding("a", "n1")).raise_for_status()


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", ["a", "b"]), ("app!=web", ["c", "e"]), ("app in (web,db)", ["a", "b", "c"]),
    ("app notin (web)", ["c", "e"]), ("!app", ["e"]), ("app=web,tier=back", ["b"]), ("version>5", ["e"]),
])
def test_label_selectors(server: Server, selector: str, expected: list[str]) -> None:
    seed_pods(server)
    items = server.raw.get(server.path("pods"), params={"labelSelector": selector}).json()["items"]
    assert sorted(i["metadata"]["name"] for i in items) == expected


def test_field_selectors_and_bad_selectors(server: Server) -> None:
    seed_pods(server)
    bound = server.raw.get(server.path("pods"), params={"fieldSelector": "spec.nodeName=n1"}).json()["items"]
    assert [i["metadata"]["name"] for i in bound] == ["a"]
    unbound = server.raw.get(server.path("pods"), params={"fieldSelector": "spec.nodeName="}).json()["items"]
    assert sorted(i["metadata"]["name"] for i in unbound) == ["b", "c", "e"]
    assert server.raw.get(server.path("pods"), params={"fieldSelector": "spec.bogus=x"}).status_code == 400
    assert server.raw.get(server.path("pods"), params={"labelSelector": "app in (web"}).status_code == 400


def test_pagination_is_a_consistent_snapshot_and_items_carry_no_type_meta(server: Server) -> None:
    for i in range(5):
        server.raw.post(server.path("configmaps"), json=configmap(f"c{i}")).raise_for_status()
    first = server.raw.get(server.path("configmaps"), params={"limit": "2"}).json()
    assert [i["metadata"]["name"] for i in first["items"]] == ["c0", "c1"]
    assert first["metadata"]["remainingItemCount"] == 3
    assert "kind" not in first["items"][0] and "apiVersion" not in first["items"][0]
    server.raw.post(server.path("configmaps"), json=configmap("c9")).raise_for_status()  # after the first page
    server.raw.delete(server.path("configmaps", "c3"))
    rest = server.raw.get(server.path("configmaps"), params={"limit": "10", "continue": first["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in rest.json()["items"]] == ["c2", "c3", "c4"]
    assert rest.json()["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_list_at_an_exact_old_revision_and_a_future_one(server: Server) -> None:
    server.raw.post(server.path("configmaps"), json=configmap("one")).raise_for_status()
    then = server.raw.get(server.path("configmaps")).json()["metadata"]["resourceVersion"]
    server.raw.post(server.path("configmaps"), json=configmap("two")).raise_for_status()
    old = server.raw.get(server.path("configmaps"), params={"resourceVersion": then,
                                                             "resourceVersionMatch": "Exact"}).json()
    assert [i["metadata"]["name"] for i in old["items"]] == ["one"]
    future = str(int(then) + 1_000_000)
    started = time.monotonic()
    r = server.raw.get(server.path("configmaps"), params={"resourceVersion": future})
    waited = time.monotonic() - started
    assert r.status_code == 504 and r.json()["reason"] == "Timeout"
    assert r.json()["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
    print(f"{server.kind}: a list at a future revision answered after {waited:.1f}s")


# ----------------------------------------------------------------------------------------------- watches


def watch_events(server: Server, params: dict[str, str], until: Callable[[list[dict[str, Any]]], bool],
                 resource: str = "configmaps", timeout: float = 15) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with server.raw.stream("GET", server.path(resource), params={"watch": "1", **params},
                           timeout=httpx.Timeout(timeout)) as stream:
        assert stream.headers["content-type"].startswith("application/json")
        for line in stream.iter_lines():
            if line:
                events.append(orjson.loads(line))
                if until(events):
                    break
    return events


def test_watch_replays_after_a_revision_then_streams_live(server: Server) -> None:
    created = server.raw.post(server.path("configmaps"), json=configmap("w")).json()
    rv = created["metadata"]["resourceVersion"]
    server.raw.patch(server.path("configmaps", "w"), json={"data": {"a": "1"}}, headers=MERGE).raise_for_status()

    def later() -> None:
        time.sleep(0.5)
        server.raw.delete(server.path("configmaps", "w"))

    writer = threading.Thread(target=later)
    writer.start()
    events = watch_events(server, {"resourceVersion": rv}, lambda ev: ev[-1]["type"] == "DELETED")
    writer.join()  # its request is answered before the test (and its server) ends
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert events[0]["object"]["kind"] == "ConfigMap" and events[0]["object"]["data"] == {"a": "1"}


def test_watch_from_zero_starts_with_synthetic_added(server: Server) -> None:
    server.raw.post(server.path("configmaps"), json=configmap("z1")).raise_for_status()
    server.raw.post(server.path("configmaps"), json=configmap("z2")).raise_for_status()
    events = watch_events(server, {"resourceVersion": "0"}, lambda ev: len(ev) == 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "z1"), ("ADDED", "z2")]


def test_send_initial_events_ends_with_an_annotated_bookmark(server: Server) -> None:
    server.raw.post(server.path("configmaps"), json=configmap("i1")).raise_for_status()
    events = watch_events(server, {"sendInitialEvents": "true", "allowWatchBookmarks": "true",
                                   "resourceVersionMatch": "NotOlderThan"},
                          lambda ev: ev[-1]["type"] == "BOOKMARK")
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    bookmark = events[-1]["object"]
    assert bookmark["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert set(bookmark["metadata"]) == {"resourceVersion", "annotations"}


def test_label_selector_transitions_are_added_and_deleted(server: Server) -> None:
    cm = configmap("sel")
    server.raw.post(server.path("configmaps"), json=cm).raise_for_status()
    rv = server.raw.get(server.path("configmaps")).json()["metadata"]["resourceVersion"]

    def later() -> None:
        time.sleep(0.3)
        server.raw.patch(server.path("configmaps", "sel"), json={"metadata": {"labels": {"on": "yes"}}}, headers=MERGE)
        server.raw.patch(server.path("configmaps", "sel"), json={"metadata": {"labels": {"on": None}}}, headers=MERGE)

    writer = threading.Thread(target=later)
    writer.start()
    events = watch_events(server, {"resourceVersion": rv, "labelSelector": "on=yes"}, lambda ev: len(ev) == 2)
    writer.join()  # its request is answered before the test (and its server) ends
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]


def test_timeout_seconds_ends_the_stream_cleanly(server: Server) -> None:
    started = time.monotonic()
    events = watch_events(server, {"resourceVersion": "0", "timeoutSeconds": "1"}, lambda ev: False)
    assert events == [] and time.monotonic() - started < 10


# ----------------------------------------------------------------------------------------------- patches


def test_merge_json_and_strategic_patches(server: Server) -> None:
    server.raw.post(server.path("configmaps"), json=configmap("m", {"a": "1", "b": "2"})).raise_for_status()
    r = server.raw.patch(server.path("configmaps", "m"), headers=MERGE,
                         content=json.dumps({"data": {"a": None, "c": "3"}, "metadata": {"labels": {"x": "y"}}}))
    assert r.json()["data"] == {"b": "2", "c": "3"} and r.json()["metadata"]["labels"] == {"x": "y"}

    body = pod("s")
    body["spec"]["containers"].append({"name": "sidecar", "image": "side:1"})
    server.raw.post(server.path("pods"), json=body).raise_for_status()
    r = server.raw.patch(server.path("pods", "s"), headers=SMP,
                         content=json.dumps({"spec": {"containers": [{"name": "sidecar", "image": "side:2"}]}}))
    assert [(c["name"], c["image"]) for c in r.json()["spec"]["containers"]] == [
        ("app", "registry.example/app:1.0"), ("sidecar", "side:2")]
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}},
           {"op": "add", "path": "/metadata/annotations/example.com~1memory-min", "value": "1024"}]
    r = server.raw.patch(server.path("pods", "s"), headers=JSONP, content=json.dumps(ops))
    assert r.json()["metadata"]["annotations"] == {"k": "v", "example.com/memory-min": "1024"}
    failing = [{"op": "test", "path": "/metadata/name", "value": "other"}]
    assert server.raw.patch(server.path("pods", "s"), headers=JSONP, content=json.dumps(failing)).status_code == 422
    bad = [{"op": "frobnicate", "path": "/x"}]
    assert server.raw.patch(server.path("pods", "s"), headers=JSONP, content=json.dumps(bad)).status_code in (400, 422)
    missing = [{"op": "replace", "path": "/metadata/labels/none", "value": "v"}]
    assert server.raw.patch(server.path("pods", "s"), headers=JSONP, content=json.dumps(missing)).status_code == 422


def test_json_patch_with_an_unknown_op_is_422(server: Server) -> None:
    fake_differs(server, "a JSON patch with an unknown op is 400")
    server.raw.post(server.path("configmaps"), json=configmap("o")).raise_for_status()
    r = server.raw.patch(server.path("configmaps", "o"), headers=JSONP,
                         content=json.dumps([{"op": "frobnicate", "path": "/x"}]))
    assert r.status_code == 422


def test_strategic_merge_of_status_conditions(server: Server) -> None:
    server.raw.post(server.path("pods"), json=pod("c")).raise_for_status()
    conds = {"status": {"conditions": [{"type": "Ready", "status": "False"},
                                       {"type": "Initialized", "status": "True"}]}}
    server.raw.patch(server.path("pods", "c") + "/status", headers=SMP, content=json.dumps(conds)).raise_for_status()
    one = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    r = server.raw.patch(server.path("pods", "c") + "/status", headers=SMP, content=json.dumps(one))
    assert {c["type"]: c["status"] for c in r.json()["status"]["conditions"]} == {"Ready": "True",
                                                                                 "Initialized": "True"}
    delete = {"status": {"conditions": [{"type": "Ready", "$patch": "delete"}]}}
    r = server.raw.patch(server.path("pods", "c") + "/status", headers=SMP, content=json.dumps(delete))
    assert [c["type"] for c in r.json()["status"]["conditions"]] == ["Initialized"]


def test_patch_preconditions_errors_and_empty_patches(server: Server) -> None:
    cm = server.raw.post(server.path("configmaps"), json=configmap("rv")).json()
    r = server.raw.patch(server.path("configmaps", "rv"), headers=MERGE, content=b"{}")
    assert r.json()["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]
    server.raw.patch(server.path("configmaps", "rv"), headers=MERGE, content=b'{"data":{"a":"1"}}')
    stale = {"metadata": {"resourceVersion": cm["metadata"]["resourceVersion"]}, "data": {"a": "2"}}
    r = server.raw.patch(server.path("configmaps", "rv"), headers=MERGE, content=json.dumps(stale))
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"
    assert server.raw.patch(server.path("configmaps", "none"), headers=MERGE, content=b"{}").status_code == 404
    r = server.raw.patch(server.path("configmaps", "rv"), headers={"Content-Type": "text/plain"}, content=b"{}")
    assert r.status_code == 415
    r = server.raw.patch(server.path("configmaps", "rv"), headers=MERGE, content=b'{"metadata":{"name":"x"}}')
    assert r.status_code == 400


def test_server_side_apply_requires_a_field_manager_and_creates_then_updates(server: Server) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: '1'\n"
    r = server.raw.patch(server.path("configmaps", "applied"), headers=APPLY, content=manifest)
    assert r.status_code == 422
    r = server.raw.patch(server.path("configmaps", "applied"), params={"fieldManager": "t"}, headers=APPLY,
                         content=manifest)
    assert r.status_code == 201 and r.json()["data"] == {"a": "1"}
    r = server.raw.patch(server.path("configmaps", "applied"), params={"fieldManager": "t"}, headers=APPLY,
                         content=manifest.replace("'1'", "'2'"))
    assert r.status_code == 200 and r.json()["data"] == {"a": "2"}


def test_server_side_apply_tracks_field_ownership(server: Server) -> None:
    fake_differs(server, "server-side apply has no managedFields and no conflicts")
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\ndata:\n  a: '1'\n"
    server.raw.patch(server.path("configmaps", "owned"), params={"fieldManager": "one"}, headers=APPLY,
                     content=manifest).raise_for_status()
    r = server.raw.patch(server.path("configmaps", "owned"), params={"fieldManager": "two"}, headers=APPLY,
                         content=manifest.replace("'1'", "'2'"))
    assert r.status_code == 409 and "conflict" in r.json()["message"].lower()
    managers = {m["manager"] for m in server.raw.get(server.path("configmaps", "owned")).json()["metadata"]
                ["managedFields"]}
    assert managers == {"one"}


def test_server_side_apply_of_unknown_fields_fails_in_every_mode(server: Server) -> None:
    fake_differs(server, "server-side apply drops unknown fields like create (the real one fails with 500)")
    manifest = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: ssa\nspec:\n  qosResources: []\n  containers:\n"
                "  - name: app\n    image: i:1\n")
    for mode in ("Strict", "Warn", "Ignore"):
        r = server.raw.patch(server.path("pods", "ssa"), params={"fieldManager": "t", "fieldValidation": mode},
                             headers=APPLY, content=manifest)
        assert r.status_code == 500 and ".spec.qosResources: field not declared in schema" in r.json()["message"]


# ----------------------------------------------------------------------------------------------- binding


def test_binding_sets_the_node_once_and_answers_a_success_status(server: Server) -> None:
    created = server.raw.post(server.path("pods"), json=pod("b")).json()
    r = server.raw.post(server.path("pods", "b") + "/binding", json=binding("b", "n1"))
    assert r.status_code == 201
    assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    bound = server.raw.get(server.path("pods", "b")).json()
    assert bound["spec"]["nodeName"] == "n1"
    assert int(bound["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert [(c["type"], c["status"]) for c in bound["status"]["conditions"]] == [("PodScheduled", "True")]
    again = server.raw.post(server.path("pods", "b") + "/binding", json=binding("b", "n2"))
    assert again.status_code == 409
    assert again.json()["message"] == ('Operation cannot be fulfilled on pods/binding "b": pod b is already assigned '
                                       'to node "n1"')


def test_binding_errors_and_the_bindings_collection(server: Server) -> None:
    assert server.raw.post(server.path("pods", "ghost") + "/binding", json=binding("ghost", "n1")).status_code == 404
    server.raw.post(server.path("pods"), json=pod("p")).raise_for_status()
    assert server.raw.post(server.path("pods", "p") + "/binding", json=binding("other", "n1")).status_code == 400
    mismatch = binding("p", "n1")
    mismatch["metadata"]["uid"] = "not-the-pod"
    assert server.raw.post(server.path("pods", "p") + "/binding", json=mismatch).status_code == 409
    assert server.raw.get(server.path("pods", "p") + "/binding").status_code == 405
    assert server.raw.post(server.path("bindings"), json=binding("p", "n7")).status_code == 201
    assert server.raw.get(server.path("pods", "p")).json()["spec"]["nodeName"] == "n7"


def test_concurrent_bindings_exactly_one_wins(server: Server) -> None:
    server.raw.post(server.path("pods"), json=pod("race")).raise_for_status()

    def bind(i: int) -> int:
        return server.raw.post(server.path("pods", "race") + "/binding", json=binding("race", f"n{i}")).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert sorted(pool.map(bind, range(16))) == [201] + [409] * 15


# ----------------------------------------------------------------------------------------------- admission


def test_mutate_then_validate_request_shapes(server: Server) -> None:
    server.routes["/mutate"] = lambda req: patch_response(
        [{"op": "add", "path": "/metadata/annotations", "value": {"example.com/memory-min": "1048576"}}])
    server.register("mutate", "mutating", "/mutate")
    server.register("validate", "validating", "/validate")
    created = server.raw.post(server.path("pods"), json=pod(generate_name="web-", memory="1Mi")).json()
    assert created["metadata"]["annotations"] == {"example.com/memory-min": "1048576"}
    [m] = server.received("/mutate")
    [v] = server.received("/validate")
    assert "name" not in m and "uid" not in m["object"]["metadata"]
    assert m["object"]["metadata"]["generateName"] == "web-"
    assert m["kind"] == m["requestKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert m["resource"] == m["requestResource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert "subResource" not in m
    assert m["namespace"] == server.namespace and m["operation"] == "CREATE"
    assert {k: v for k, v in m["userInfo"].items() if k != "extra"} == server.user
    assert m["object"]["kind"] == "Pod" and m["object"]["apiVersion"] == "v1"
    assert m["oldObject"] is None and m["dryRun"] is False
    assert m["options"] == {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
    assert m["object"]["spec"]["containers"][0]["resources"]["requests"] == {"memory": "1Mi"}
    assert v["name"] == created["metadata"]["name"]
    assert v["object"]["metadata"]["uid"] == created["metadata"]["uid"]
    assert v["object"]["metadata"]["annotations"] == {"example.com/memory-min": "1048576"}
    assert v["object"]["status"]["phase"] == "Pending"
    assert v["uid"] != m["uid"]
    assert all(p.endswith("?timeout=10s") for p, r in server.hook.requests if r in (m, v))  # type: ignore[union-attr]


def test_user_info_carries_a_credential_id(server: Server) -> None:
    fake_differs(server, "userInfo.extra has no authentication.kubernetes.io/credential-id")
    server.register("v", "validating", "/validate")
    server.raw.post(server.path("pods"), json=pod("u")).raise_for_status()
    [v] = server.received("/validate")
    [credential] = v["userInfo"]["extra"]["authentication.kubernetes.io/credential-id"]
    assert credential.startswith("X509SHA256=")  # JTI=<id> for service-account tokens


def test_webhook_names_must_be_qualified(server: Server) -> None:
    fake_differs(server, "any webhook name is accepted")
    body = {"metadata": {"name": f"names-{server.namespace}"}, "webhooks": [{
        "name": "v", "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": {"url": "https://127.0.0.1:1/validate"}}]}
    if server.real:
        r = server.raw.post("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", json=body,
                            params={"dryRun": "All"})
        assert r.status_code == 422
        assert 'webhooks[0].name: Invalid value: "v": should be a domain with at least three segments' in \
            r.json()["message"]
    else:
        assert server.fake is not None
        server.fake.add_admission_webhook("v", kind="validating", url="https://127.0.0.1:1/validate",
                                          ca_pem=TLS.ca_pem)
        server.fake.remove_admission_webhook("v")
        raise AssertionError("the fake registered a webhook named 'v'")


def test_update_and_delete_requests(server: Server) -> None:
    rules = [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["*"]}]
    server.register("v", "validating", "/validate", rules=rules)
    server.raw.post(server.path("pods"), json=pod("p")).raise_for_status()
    server.raw.patch(server.path("pods", "p"), json={"metadata": {"labels": {"a": "b"}}},
                     headers=SMP).raise_for_status()
    server.raw.delete(server.path("pods", "p"), params={"gracePeriodSeconds": "0"}).raise_for_status()
    _create, update, delete = server.received("/validate")[:3]
    assert update["operation"] == "UPDATE" and update["name"] == "p"
    assert update["oldObject"]["metadata"].get("labels") is None
    assert update["object"]["metadata"]["labels"] == {"a": "b"}
    assert update["options"]["kind"] == "UpdateOptions"
    assert delete["operation"] == "DELETE" and delete["object"] is None
    assert delete["oldObject"]["metadata"]["labels"] == {"a": "b"}
    assert delete["options"]["kind"] == "DeleteOptions"


def test_denials_carry_the_webhooks_code_and_message(server: Server) -> None:
    server.routes["/validate"] = lambda req: {"allowed": False, "status": {
        "code": 422, "reason": "Invalid", "message": "class gold exhausted"}}
    server.register("quota", "validating", "/validate")
    r = server.raw.post(server.path("pods"), json=pod("denied"))
    assert r.status_code == 422 and r.json()["reason"] == "Invalid" and r.json()["code"] == 422
    assert r.json()["message"] == (f'admission webhook "{server.hook_name("quota")}" denied the request: '
                                   "class gold exhausted")
    server.routes["/validate"] = lambda req: {"allowed": False}
    r = server.raw.post(server.path("pods"), json=pod("x"))
    assert r.json()["message"] == (f'admission webhook "{server.hook_name("quota")}" denied the request '
                                   "without explanation")


def test_a_denial_without_an_error_code_is_400(server: Server) -> None:
    fake_differs(server, "a denial without a code (or one below 400) becomes 403; kube-apiserver makes it 400")
    server.register("quota", "validating", "/validate")
    for status in (None, {"message": "m"}, {"code": 200, "message": "m"}):
        server.routes["/validate"] = lambda req, status=status: {"allowed": False, **({"status": status} if status
                                                                                     else {})}
        r = server.raw.post(server.path("pods"), json=pod(generate_name="x-"))
        assert r.status_code == 400 and r.json()["code"] == 400, status


def test_warnings_become_warning_headers(server: Server) -> None:
    server.routes["/mutate"] = lambda req: {"allowed": True, "warnings": ['class "silver" is deprecated']}
    server.routes["/validate"] = lambda req: {"allowed": True, "warnings": ["second\x07warning"]}
    server.register("m", "mutating", "/mutate")
    server.register("v", "validating", "/validate")
    r = server.raw.post(server.path("pods"), json=pod("w"))
    assert r.status_code == 201
    assert r.headers.get_list("warning")[0] == '299 - "class \\"silver\\" is deprecated"'


def test_warnings_with_control_characters_are_dropped_and_long_ones_kept(server: Server) -> None:
    fake_differs(server, "control characters are stripped from a warning (the real server drops the warning) and "
                 "long warnings are truncated")
    server.routes["/validate"] = lambda req: {"allowed": True, "warnings": ["a\x07b", "x" * 300, "ok"]}
    server.register("v", "validating", "/validate")
    r = server.raw.post(server.path("pods"), json=pod("w"))
    assert r.headers.get_list("warning") == [f'299 - "{"x" * 300}"', '299 - "ok"']


def test_a_patch_that_does_not_apply_is_500_even_when_ignored(server: Server) -> None:
    server.routes["/mutate"] = lambda req: patch_response(
        [{"op": "add", "path": "/metadata/annotations/example.com~1memory-min", "value": "1"}])
    server.register("m", "mutating", "/mutate", failure_policy="Ignore")
    r = server.raw.post(server.path("pods"), json=pod("p"))
    assert r.status_code == 500 and r.json()["reason"] == "InternalError"
    assert r.json()["message"].startswith("Internal error occurred: ")
    assert server.raw.get(server.path("pods", "p")).status_code == 404


def test_a_patch_producing_a_wrongly_typed_object_is_500(server: Server) -> None:
    server.routes["/mutate"] = lambda req: patch_response(
        [{"op": "add", "path": "/metadata/annotations", "value": {"example.com/memory-min": 1024}}])
    server.register("m", "mutating", "/mutate")
    r = server.raw.post(server.path("pods"), json=pod("p"))
    assert r.status_code == 500 and "cannot unmarshal number" in r.json()["message"]


def test_unknown_fields_added_by_a_webhook_are_dropped(server: Server) -> None:
    server.routes["/mutate"] = lambda req: patch_response([{"op": "add", "path": "/spec/qosResources", "value": []}])
    server.register("m", "mutating", "/mutate")
    r = server.raw.post(server.path("pods"), json=pod("p"))
    assert r.status_code == 201 and "qosResources" not in r.json()["spec"]


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
def test_bad_responses_obey_the_failure_policy(server: Server, policy: str) -> None:
    replies: list[Handler] = [
        lambda req: {"uid": "someone-else", "allowed": True},
        lambda req: RawReply(200, json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                                              "response": {"uid": req["uid"], "allowed": True}}).encode()),
        lambda req: RawReply(500, b"boom"),
        lambda req: RawReply(200, b"not json"),
        lambda req: {"allowed": True, "patch": base64.b64encode(b"[]").decode(), "patchType": "Merge"},
    ]
    server.register("v", "validating", "/validate", failure_policy=policy)
    for i, reply in enumerate(replies):
        server.routes["/validate"] = reply
        r = server.raw.post(server.path("pods"), json=pod(f"p{i}"))
        if policy == "Ignore":
            assert r.status_code == 201, (i, r.text)
        else:
            assert r.status_code == 500, (i, r.text)
            assert r.json()["message"].startswith(
                f'Internal error occurred: failed calling webhook "{server.hook_name("v")}": '), r.text


def test_validating_webhooks_may_not_patch(server: Server) -> None:
    server.routes["/validate"] = lambda req: patch_response([])
    server.register("v", "validating", "/validate")
    r = server.raw.post(server.path("pods"), json=pod("p"))
    assert r.status_code == 500
    assert "received invalid webhook response: validating webhook may not return" in r.json()["message"]
    if server.real:
        assert r.json()["message"].endswith("validating webhook may not return response.patch")


def test_tls_is_verified_against_the_ca(server: Server) -> None:
    server.register("wrong-ca", "validating", "/validate", ca_pem=make_tls().ca_pem)
    r = server.raw.post(server.path("pods"), json=pod("b"))
    assert r.status_code == 500 and f'failed calling webhook "{server.hook_name("wrong-ca")}"' in r.json()["message"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("policy", ["Ignore", "Fail"])
def test_an_unreachable_webhook(server: Server, policy: str) -> None:
    server.register("down", "validating", "/validate", failure_policy=policy,
                    url=f"https://127.0.0.1:{free_port()}/validate")
    r = server.raw.post(server.path("pods"), json=pod("a"))
    if policy == "Ignore":
        assert r.status_code == 201
    else:
        assert r.status_code == 500
        assert f'failed calling webhook "{server.hook_name("down")}": failed to call webhook' in r.json()["message"]


def test_a_slow_webhook_times_out(server: Server) -> None:
    release = threading.Event()
    server.routes["/validate"] = lambda req: (release.wait(10), {"allowed": True})[1]
    server.register("slow", "validating", "/validate", timeout_seconds=1)
    try:
        r = server.raw.post(server.path("pods"), json=pod("a"))
    finally:
        release.set()
    assert r.status_code == 500 and f'failed calling webhook "{server.hook_name("slow")}"' in r.json()["message"]


def test_dry_run_reaches_webhooks_and_side_effects_unknown_refuses_it(server: Server) -> None:
    server.routes["/mutate"] = lambda req: patch_response(
        [{"op": "add", "path": "/metadata/labels", "value": {"m": "1"}}])
    server.register("m", "mutating", "/mutate", side_effects="NoneOnDryRun")
    out = server.raw.post(server.path("pods"), params={"dryRun": "All"}, json=pod("dry")).json()
    assert out["metadata"]["labels"] == {"m": "1"}
    [m] = server.received("/mutate")
    assert m["dryRun"] is True and m["options"]["dryRun"] == ["All"]
    assert server.raw.get(server.path("pods", "dry")).status_code == 404


def test_side_effects_unknown_cannot_be_registered(server: Server) -> None:
    """admissionregistration.k8s.io/v1 allows only None and NoneOnDryRun (the fake, like v1beta1, accepts
    Unknown/Some and then fails dry-run requests with 400 'does not support dry run')."""
    fake_differs(server, "webhooks with sideEffects Unknown/Some can be registered")
    with pytest.raises(httpx.HTTPStatusError) as refused:
        server.register("se", "validating", "/validate", side_effects="Unknown")
    assert refused.value.response.status_code == 422
    assert 'supported values: "None", "NoneOnDryRun"' in refused.value.response.json()["message"]


def test_validating_webhooks_are_called_in_parallel_and_mutating_ones_in_order(server: Server) -> None:
    barrier = threading.Barrier(2, timeout=10)

    def meet(req: dict[str, Any]) -> dict[str, Any]:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return {"allowed": False, "status": {"message": "called serially"}}
        return {"allowed": True}

    server.routes["/v1"] = meet
    server.routes["/v2"] = meet
    server.routes["/first"] = lambda req: patch_response(
        [{"op": "add", "path": "/metadata/annotations", "value": {"order": "first"}}])
    server.routes["/second"] = lambda req: patch_response(
        [{"op": "replace", "path": "/metadata/annotations/order",
          "value": req["object"]["metadata"]["annotations"]["order"] + ",second"}])
    server.register("one", "validating", "/v1")
    server.register("two", "validating", "/v2")
    server.register("first", "mutating", "/first")
    server.register("second", "mutating", "/second")
    r = server.raw.post(server.path("pods"), json=pod("par"))
    assert r.status_code == 201, r.text
    assert r.json()["metadata"]["annotations"] == {"order": "first,second"}


def test_reinvocation_if_needed(server: Server) -> None:
    server.routes["/late"] = lambda req: patch_response(
        [{"op": "add", "path": "/metadata/labels", "value": {"late": "1"}}])
    server.register("early", "mutating", "/early", reinvocation_policy="IfNeeded")
    server.register("late", "mutating", "/late")
    server.raw.post(server.path("pods"), json=pod("r")).raise_for_status()
    early = server.received("/early")
    assert len(early) == 2 and early[1]["object"]["metadata"]["labels"] == {"late": "1"}


def test_object_selector_and_subresource_rules(server: Server) -> None:
    server.register("bind", "validating", "/bind", rules=[{"apiGroups": [""], "apiVersions": ["v1"],
                                                           "resources": ["pods/binding"], "operations": ["CREATE"]}])
    server.register("main", "validating", "/main",
                    object_selector={"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]})
    server.raw.post(server.path("pods"), json=pod("skipped", labels={"skip": "1"})).raise_for_status()
    server.raw.post(server.path("pods"), json=pod("b")).raise_for_status()
    server.raw.post(server.path("pods", "b") + "/binding", json=binding("b", "n1")).raise_for_status()
    [b] = server.received("/bind")
    assert b["kind"] == {"group": "", "version": "v1", "kind": "Binding"}
    assert b["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert b["subResource"] == "binding" and b["object"]["target"]["name"] == "n1"
    assert [(r["operation"], r["name"]) for r in server.received("/main")] == [("CREATE", "b")]
