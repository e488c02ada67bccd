"""Dynamic admission through real HTTPS webhooks (throwaway CA, SNI-verified)."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from .objects import configmap, namespace, pod
from .server import FakeAPIServer
from .tlswebhook import SERVICE_HOST, RawReply, WebhookServer, make_tls, patch_response

PODS_CU = [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE", "UPDATE"]}]
Routes = dict[str, Callable[[dict[str, Any]], Any]]


@pytest.fixture
def routes() -> Routes:
    return {}


@pytest.fixture
def hook(routes: Routes) -> Iterator[WebhookServer]:
    def handler(path: str, req: dict[str, Any]) -> Any:
        fn = routes.get(path)
        return fn(req) if fn else {"allowed": True}

    with WebhookServer(handler) as srv:
        yield srv


def register(api: FakeAPIServer, srv: WebhookServer, name: str, kind: str, path: str, **kw: Any) -> None:
    kw.setdefault("rules", PODS_CU)
    api.add_admission_webhook(
        name, kind=kind, url=srv.url(path), ca_pem=srv.tls.ca_pem, server_hostname=SERVICE_HOST, **kw
    )


def body_of(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def test_mutate_then_validate_request_shapes(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, core: client.CoreV1Api
) -> None:
    routes["/mutate"] = lambda req: patch_response(
        [{"op": "add", "path": "/metadata/annotations", "value": {"qosgate.io/memory-min": "1048576"}}]
    )
    register(fake_api, hook, "mutate.qosgate.io", "mutating", "/mutate")
    register(fake_api, hook, "validate.qosgate.io", "validating", "/validate")
    created = core.create_namespaced_pod("default", pod(generate_name="web-", memory="1Mi"))
    assert created.metadata.annotations == {"qosgate.io/memory-min": "1048576"}

    [m] = hook.received("/mutate")
    [v] = hook.received("/validate")
    # Mutating webhooks run before rest.BeforeCreate: no name (omitted, Go omitempty), no uid yet.
    assert "name" not in m and "uid" not in m["object"]["metadata"]
    assert m["object"]["metadata"]["generateName"] == "web-"
    assert m["kind"] == m["requestKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert m["resource"] == m["requestResource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert "subResource" not in m
    assert m["namespace"] == "default" and m["operation"] == "CREATE"
    assert m["userInfo"] == {"username": "admin", "groups": ["system:masters", "system:authenticated"]}
    assert m["object"]["kind"] == "Pod" and m["object"]["apiVersion"] == "v1"
    assert m["oldObject"] is None and m["dryRun"] is False
    assert m["options"] == {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
    # Decode-time defaulting happened before admission: requests are visible to the webhook.
    assert m["object"]["spec"]["containers"][0]["resources"]["requests"] == {"memory": "1Mi"}
    # Validating webhooks run after BeforeCreate and see the mutation, the generated name and uid.
    assert v["name"] == created.metadata.name
    assert v["object"]["metadata"]["uid"] == created.metadata.uid
    assert v["object"]["metadata"]["annotations"] == {"qosgate.io/memory-min": "1048576"}
    assert v["object"]["status"]["phase"] == "Pending"
    assert v["uid"] != m["uid"]
    assert all(p.endswith("?timeout=10s") for p, _ in hook.requests)


def test_update_and_delete_requests(fake_api: FakeAPIServer, hook: WebhookServer, core: client.CoreV1Api) -> None:
    rules = [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["*"]}]
    register(fake_api, hook, "v", "validating", "/validate", rules=rules)
    core.create_namespaced_pod("default", pod("p"))
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"a": "b"}}})
    core.delete_namespaced_pod("p", "default")
    _create, update, delete = hook.received("/validate")
    assert update["operation"] == "UPDATE" and update["name"] == "p"
    assert update["oldObject"]["metadata"].get("labels") is None
    assert update["object"]["metadata"]["labels"] == {"a": "b"}
    assert update["options"]["kind"] == "UpdateOptions"
    assert delete["operation"] == "DELETE"
    assert delete["object"] is None and delete["oldObject"]["metadata"]["labels"] == {"a": "b"}
    assert delete["options"]["kind"] == "DeleteOptions"


def test_validating_denial_status_and_message(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, core: client.CoreV1Api
) -> None:
    routes["/validate"] = lambda req: {
        "allowed": False,
        "status": {"code": 422, "reason": "Invalid", "message": "class gold exhausted in namespace default"},
    }
    register(fake_api, hook, "quota.qosgate.io", "validating", "/validate")
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("default", pod("denied"))
    assert err.value.status == 422
    body = body_of(err.value)
    assert body["message"] == (
        'admission webhook "quota.qosgate.io" denied the request: class gold exhausted in namespace default'
    )
    assert body["reason"] == "Invalid" and body["code"] == 422
    assert core.list_namespaced_pod("default").items == []


def test_denial_without_code_is_403_and_without_message_says_so(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client
) -> None:
    routes["/validate"] = lambda req: {"allowed": False}
    register(fake_api, hook, "v", "validating", "/validate")
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("x"))
    assert r.status_code == 403
    assert r.json()["message"] == 'admission webhook "v" denied the request without explanation'


def test_mutating_denial(fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client) -> None:
    routes["/mutate"] = lambda req: {"allowed": False, "status": {"message": "containers disagree"}}
    register(fake_api, hook, "m", "mutating", "/mutate")
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("x"))
    assert r.status_code == 403
    assert r.json()["message"] == 'admission webhook "m" denied the request: containers disagree'


def test_warnings_become_warning_headers(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client
) -> None:
    routes["/mutate"] = lambda req: {"allowed": True, "warnings": ['class "silver" is deprecated']}
    routes["/validate"] = lambda req: {"allowed": True, "warnings": ["second\x07warning"]}
    register(fake_api, hook, "m", "mutating", "/mutate")
    register(fake_api, hook, "v", "validating", "/validate")
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("w"))
    assert r.status_code == 201
    assert r.headers.get_list("warning") == ['299 - "class \\"silver\\" is deprecated"', '299 - "secondwarning"']


def test_patch_that_does_not_apply_is_500_even_when_ignored(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client
) -> None:
    # Adding under a map that does not exist fails: the webhook should have added the whole map.
    routes["/mutate"] = lambda req: patch_response(
        [{"op": "add", "path": "/metadata/annotations/qosgate.io~1memory-min", "value": "1"}]
    )
    register(fake_api, hook, "m", "mutating", "/mutate", failure_policy="Ignore")
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("p"))
    assert r.status_code == 500
    assert r.json()["reason"] == "InternalError"
    assert r.json()["message"].startswith("Internal error occurred: ")
    assert fake_api.objects("pods") == []


def test_patch_producing_a_wrongly_typed_object_is_500(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client
) -> None:
    routes["/mutate"] = lambda req: patch_response(
        [{"op": "add", "path": "/metadata/annotations", "value": {"qosgate.io/memory-min": 1024}}]
    )
    register(fake_api, hook, "m", "mutating", "/mutate")
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("p"))
    assert r.status_code == 500 and "cannot unmarshal number" in r.json()["message"]


def test_unknown_fields_added_by_a_webhook_are_dropped(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client
) -> None:
    routes["/mutate"] = lambda req: patch_response([{"op": "add", "path": "/spec/qosResources", "value": []}])
    register(fake_api, hook, "m", "mutating", "/mutate")
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("p"))
    assert r.status_code == 201 and "qosResources" not in r.json()["spec"]


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
def test_bad_responses_obey_failure_policy(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client, policy: str
) -> None:
    replies: list[Callable[[dict[str, Any]], Any]] = [
        lambda req: {"uid": "someone-else", "allowed": True},  # uid must echo the request
        lambda req: RawReply(
            200,
            json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1beta1",
                    "kind": "AdmissionReview",
                    "response": {"uid": req["uid"], "allowed": True},
                }
            ).encode(),
        ),
        lambda req: RawReply(500, b"boom"),
        lambda req: RawReply(200, b"not json"),
        lambda req: {"allowed": True, "patch": base64.b64encode(b"[]").decode(), "patchType": "Merge"},
    ]
    register(fake_api, hook, "v", "validating", "/validate", failure_policy=policy)
    for i, reply in enumerate(replies):
        routes["/validate"] = reply
        r = raw.post("/api/v1/namespaces/default/pods", json=pod(f"p{i}"))
        if policy == "Ignore":
            assert r.status_code == 201, (i, r.text)
        else:
            assert r.status_code == 500, (i, r.text)
            assert r.json()["message"].startswith('Internal error occurred: failed calling webhook "v": '), r.text


def test_validating_webhooks_may_not_patch(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client
) -> None:
    routes["/validate"] = lambda req: patch_response([])
    register(fake_api, hook, "v", "validating", "/validate")
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("p"))
    assert r.status_code == 500 and "may not return a patch" in r.json()["message"]


def test_tls_is_verified_against_ca_and_service_hostname(
    fake_api: FakeAPIServer, hook: WebhookServer, raw: httpx.Client
) -> None:
    fake_api.add_admission_webhook(
        "wrong-name",
        kind="validating",
        url=hook.url("/validate"),
        ca_pem=hook.tls.ca_pem,
        server_hostname="other.qosgate-system.svc",
        rules=PODS_CU,
    )
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("a"))
    assert r.status_code == 500 and 'failed calling webhook "wrong-name"' in r.json()["message"]
    fake_api.remove_admission_webhook("wrong-name")
    fake_api.add_admission_webhook(
        "wrong-ca",
        kind="validating",
        url=hook.url("/validate"),
        ca_pem=make_tls().ca_pem,
        server_hostname=SERVICE_HOST,
        rules=PODS_CU,
    )
    assert raw.post("/api/v1/namespaces/default/pods", json=pod("b")).status_code == 500
    assert hook.requests == []
    fake_api.remove_admission_webhook("wrong-ca")
    register(fake_api, hook, "right", "validating", "/validate")
    assert raw.post("/api/v1/namespaces/default/pods", json=pod("c")).status_code == 201


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_webhook(fake_api: FakeAPIServer, raw: httpx.Client) -> None:
    url = f"https://127.0.0.1:{free_port()}/validate"
    ca = make_tls().ca_pem
    fake_api.add_admission_webhook(
        "down",
        kind="validating",
        url=url,
        ca_pem=ca,
        server_hostname=SERVICE_HOST,
        rules=PODS_CU,
        failure_policy="Ignore",
    )
    assert raw.post("/api/v1/namespaces/default/pods", json=pod("a")).status_code == 201
    fake_api.add_admission_webhook(
        "down",
        kind="validating",
        url=url,
        ca_pem=ca,
        server_hostname=SERVICE_HOST,
        rules=PODS_CU,
        failure_policy="Fail",
    )
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("b"))
    assert r.status_code == 500 and 'failed calling webhook "down": failed to call webhook' in r.json()["message"]


def test_webhook_timeout(fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client) -> None:
    release = threading.Event()
    routes["/validate"] = lambda req: (release.wait(10), {"allowed": True})[1]
    register(fake_api, hook, "slow", "validating", "/validate", timeout_seconds=1)
    try:
        r = raw.post("/api/v1/namespaces/default/pods", json=pod("a"))
    finally:
        release.set()
    assert r.status_code == 500 and 'failed calling webhook "slow"' in r.json()["message"]


def test_dry_run_runs_admission_and_stores_nothing(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, core: client.CoreV1Api
) -> None:
    routes["/mutate"] = lambda req: patch_response([{"op": "add", "path": "/metadata/labels", "value": {"m": "1"}}])
    register(fake_api, hook, "m", "mutating", "/mutate", side_effects="NoneOnDryRun")
    register(fake_api, hook, "v", "validating", "/validate")
    before = fake_api.resource_version
    out = core.create_namespaced_pod("default", pod("dry"), dry_run="All")
    assert out.metadata.labels == {"m": "1"}
    assert [r["dryRun"] for r in hook.received()] == [True, True]
    assert hook.received("/mutate")[0]["options"]["dryRun"] == ["All"]
    assert fake_api.objects("pods") == [] and fake_api.resource_version == before
    # An update in dry-run mode changes nothing either.
    core.create_namespaced_pod("default", pod("real"))
    core.patch_namespaced_pod("real", "default", {"metadata": {"labels": {"x": "y"}}}, dry_run="All")
    assert fake_api.get_object("pods", "default", "real")["metadata"]["labels"] == {"m": "1"}


def test_side_effects_unknown_rejects_dry_run(fake_api: FakeAPIServer, hook: WebhookServer, raw: httpx.Client) -> None:
    register(fake_api, hook, "se", "validating", "/validate", side_effects="Unknown")
    r = raw.post("/api/v1/namespaces/default/pods", params={"dryRun": "All"}, json=pod("a"))
    assert r.status_code == 400 and r.json()["message"] == 'admission webhook "se" does not support dry run'


def test_validating_webhooks_are_called_in_parallel(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client
) -> None:
    # Each webhook waits for the other inside its call: this only completes if both calls overlap.
    barrier = threading.Barrier(2, timeout=10)

    def meet(req: dict[str, Any]) -> dict[str, Any]:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return {"allowed": False, "status": {"message": "called serially"}}
        return {"allowed": True}

    routes["/v1"] = meet
    routes["/v2"] = meet
    register(fake_api, hook, "one", "validating", "/v1")
    register(fake_api, hook, "two", "validating", "/v2")
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("par"))
    assert r.status_code == 201, r.text


def test_mutating_webhooks_run_serially_in_order(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client
) -> None:
    routes["/first"] = lambda req: patch_response(
        [{"op": "add", "path": "/metadata/annotations", "value": {"order": "first"}}]
    )
    # The second webhook sees the first one's patch and builds on it.
    routes["/second"] = lambda req: patch_response(
        [
            {
                "op": "replace",
                "path": "/metadata/annotations/order",
                "value": req["object"]["metadata"]["annotations"]["order"] + ",second",
            }
        ]
    )
    register(fake_api, hook, "first", "mutating", "/first")
    register(fake_api, hook, "second", "mutating", "/second")
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("o"))
    assert r.json()["metadata"]["annotations"] == {"order": "first,second"}


def test_reinvocation_if_needed(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes, raw: httpx.Client
) -> None:
    routes["/late"] = lambda req: patch_response([{"op": "add", "path": "/metadata/labels", "value": {"late": "1"}}])
    register(fake_api, hook, "early", "mutating", "/early", reinvocation_policy="IfNeeded")
    register(fake_api, hook, "late", "mutating", "/late")
    raw.post("/api/v1/namespaces/default/pods", json=pod("r")).raise_for_status()
    early = hook.received("/early")
    assert len(early) == 2 and early[1]["object"]["metadata"]["labels"] == {"late": "1"}


def test_rules_namespaces_and_object_selector(fake_api: FakeAPIServer, hook: WebhookServer, raw: httpx.Client) -> None:
    register(
        fake_api,
        hook,
        "v",
        "validating",
        "/validate",
        object_selector={"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]},
    )
    raw.post("/api/v1/namespaces", json=namespace("qosgate-system")).raise_for_status()
    raw.post("/api/v1/namespaces/kube-system/pods", json=pod("sys", "kube-system")).raise_for_status()
    raw.post("/api/v1/namespaces/qosgate-system/pods", json=pod("own", "qosgate-system")).raise_for_status()
    raw.post("/api/v1/namespaces/default/pods", json=pod("skipped", labels={"skip": "1"})).raise_for_status()
    raw.post("/api/v1/namespaces/default/configmaps", json=configmap("not-a-pod")).raise_for_status()
    raw.post("/api/v1/namespaces/default/pods", json=pod("seen")).raise_for_status()
    assert [r["name"] for r in hook.received()] == ["seen"]


def test_subresource_rules(fake_api: FakeAPIServer, hook: WebhookServer, raw: httpx.Client) -> None:
    register(
        fake_api,
        hook,
        "bind",
        "validating",
        "/bind",
        rules=[{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/binding"], "operations": ["CREATE"]}],
    )
    register(fake_api, hook, "main", "validating", "/main")
    raw.post("/api/v1/namespaces/default/pods", json=pod("b")).raise_for_status()
    raw.post(
        "/api/v1/namespaces/default/pods/b/binding",
        json={
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "b"},
            "target": {"kind": "Node", "name": "n1"},
        },
    ).raise_for_status()
    [b] = hook.received("/bind")
    assert b["kind"] == {"group": "", "version": "v1", "kind": "Binding"}
    assert b["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert b["subResource"] == "binding" and b["object"]["target"]["name"] == "n1"
    assert [r["operation"] for r in hook.received("/main")] == ["CREATE"]  # pods rule skips subresources


def test_user_info_of_the_caller(fake_api: FakeAPIServer, hook: WebhookServer) -> None:
    register(fake_api, hook, "v", "validating", "/validate")
    fake_api.add_user("t", "system:serviceaccount:team-a:deployer", ["system:serviceaccounts"], uid="u-1")
    with httpx.Client(base_url=fake_api.url, headers={"Authorization": "Bearer t"}, trust_env=False) as c:
        c.post("/api/v1/namespaces/default/pods", json=pod("u")).raise_for_status()
    assert hook.received()[0]["userInfo"] == {
        "username": "system:serviceaccount:team-a:deployer",
        "uid": "u-1",
        "groups": ["system:serviceaccounts", "system:authenticated"],
    }


def test_admission_stays_consistent_under_concurrent_creates(
    fake_api: FakeAPIServer, hook: WebhookServer, routes: Routes
) -> None:
    import concurrent.futures

    routes["/mutate"] = lambda req: patch_response(
        [{"op": "add", "path": "/metadata/annotations", "value": {"seen": req["uid"]}}]
    )
    register(fake_api, hook, "m", "mutating", "/mutate")
    register(fake_api, hook, "v", "validating", "/validate")

    def create(i: int) -> int:
        with httpx.Client(base_url=fake_api.url, headers={"Authorization": "Bearer admin"}, trust_env=False) as c:
            return c.post("/api/v1/namespaces/default/pods", json=pod(f"c{i}")).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(create, range(16))) == {201}
    assert len(fake_api.objects("pods")) == 16 and len(hook.received("/validate")) == 16
