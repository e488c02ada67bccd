"""PATCH flavours and the pods/binding subresource."""

from __future__ import annotations

import json

import httpx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from .objects import configmap, node, pod
from .server import FakeAPIServer

MERGE = {"Content-Type": "application/merge-patch+json"}
JSONP = {"Content-Type": "application/json-patch+json"}
SMP = {"Content-Type": "application/strategic-merge-patch+json"}


def test_merge_patch_sets_and_removes_keys(raw: httpx.Client) -> None:
    raw.post("/api/v1/namespaces/default/configmaps", json=configmap("m", data={"a": "1", "b": "2"}))
    r = raw.patch(
        "/api/v1/namespaces/default/configmaps/m",
        headers=MERGE,
        content=json.dumps({"data": {"a": None, "c": "3"}, "metadata": {"labels": {"x": "y"}}}),
    )
    assert r.status_code == 200
    assert r.json()["data"] == {"b": "2", "c": "3"} and r.json()["metadata"]["labels"] == {"x": "y"}


def test_json_patch_and_its_errors(raw: httpx.Client) -> None:
    raw.post("/api/v1/namespaces/default/pods", json=pod("j")).raise_for_status()
    ops = [
        {"op": "add", "path": "/metadata/annotations", "value": {"qos-resources.qosgate.io": "memory-qos=gold"}},
        {"op": "add", "path": "/metadata/annotations/qosgate.io~1memory-min", "value": "1024"},
    ]
    r = raw.patch("/api/v1/namespaces/default/pods/j", headers=JSONP, content=json.dumps(ops))
    assert r.status_code == 200
    assert r.json()["metadata"]["annotations"] == {
        "qos-resources.qosgate.io": "memory-qos=gold",
        "qosgate.io/memory-min": "1024",
    }
    failing = [{"op": "test", "path": "/metadata/name", "value": "other"}]
    r = raw.patch("/api/v1/namespaces/default/pods/j", headers=JSONP, content=json.dumps(failing))
    assert r.status_code == 422
    bad = [{"op": "frobnicate", "path": "/x"}]
    r = raw.patch("/api/v1/namespaces/default/pods/j", headers=JSONP, content=json.dumps(bad))
    assert r.status_code == 400
    missing = [{"op": "replace", "path": "/metadata/labels/none", "value": "v"}]
    assert raw.patch("/api/v1/namespaces/default/pods/j", headers=JSONP, content=json.dumps(missing)).status_code == 422


def test_official_client_patches_dicts_as_strategic_merge(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    body = pod("s")
    body["spec"]["containers"].append({"name": "sidecar", "image": "side:1"})
    core.create_namespaced_pod("default", body)
    # A dict body goes out as strategic merge: containers merge by name instead of replacing the list.
    core.patch_namespaced_pod("s", "default", {"spec": {"containers": [{"name": "sidecar", "image": "side:2"}]}})
    got = core.read_namespaced_pod("s", "default")
    assert [(c.name, c.image) for c in got.spec.containers] == [
        ("app", "registry.example/app:1.0"),
        ("sidecar", "side:2"),
    ]
    # A list body goes out as JSON patch.
    core.patch_namespaced_pod("s", "default", [{"op": "add", "path": "/metadata/labels", "value": {"k": "v"}}])
    assert core.read_namespaced_pod("s", "default").metadata.labels == {"k": "v"}
    log = fake_api.requests_log
    assert [r.verb for r in log[-3:]] == ["get", "patch", "get"]


def test_strategic_merge_of_status_conditions(raw: httpx.Client) -> None:
    raw.post("/api/v1/namespaces/default/pods", json=pod("c")).raise_for_status()
    conds = {
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]}
    }
    raw.patch("/api/v1/namespaces/default/pods/c/status", headers=SMP, content=json.dumps(conds)).raise_for_status()
    one = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    r = raw.patch("/api/v1/namespaces/default/pods/c/status", headers=SMP, content=json.dumps(one))
    assert {c["type"]: c["status"] for c in r.json()["status"]["conditions"]} == {
        "Ready": "True",
        "Initialized": "True",
    }
    delete = {"status": {"conditions": [{"type": "Ready", "$patch": "delete"}]}}
    r = raw.patch("/api/v1/namespaces/default/pods/c/status", headers=SMP, content=json.dumps(delete))
    assert [c["type"] for c in r.json()["status"]["conditions"]] == ["Initialized"]


def test_patch_with_stale_resource_version_conflicts(raw: httpx.Client) -> None:
    cm = raw.post("/api/v1/namespaces/default/configmaps", json=configmap("rv")).json()
    raw.patch("/api/v1/namespaces/default/configmaps/rv", headers=MERGE, content=b'{"data":{"a":"1"}}')
    stale = {"metadata": {"resourceVersion": cm["metadata"]["resourceVersion"]}, "data": {"a": "2"}}
    r = raw.patch("/api/v1/namespaces/default/configmaps/rv", headers=MERGE, content=json.dumps(stale))
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"


def test_patch_errors(raw: httpx.Client) -> None:
    assert raw.patch("/api/v1/namespaces/default/configmaps/none", headers=MERGE, content=b"{}").status_code == 404
    raw.post("/api/v1/namespaces/default/configmaps", json=configmap("e")).raise_for_status()
    r = raw.patch("/api/v1/namespaces/default/configmaps/e", headers={"Content-Type": "text/plain"}, content=b"{}")
    assert r.status_code == 415
    r = raw.patch("/api/v1/namespaces/default/configmaps/e", headers=MERGE, content=b'{"metadata":{"name":"x"}}')
    assert r.status_code == 400


def test_empty_patch_does_not_bump_the_resource_version(raw: httpx.Client) -> None:
    cm = raw.post("/api/v1/namespaces/default/configmaps", json=configmap("n")).json()
    r = raw.patch("/api/v1/namespaces/default/configmaps/n", headers=MERGE, content=b"{}")
    assert r.json()["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]


def test_server_side_apply_is_approximated(raw: httpx.Client) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: '1'\n"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    r = raw.patch("/api/v1/namespaces/default/configmaps/applied", headers=headers, content=manifest)
    assert r.status_code == 422  # fieldManager is mandatory for apply
    r = raw.patch(
        "/api/v1/namespaces/default/configmaps/applied", params={"fieldManager": "t"}, headers=headers, content=manifest
    )
    assert r.status_code == 201 and r.json()["data"] == {"a": "1"}
    r = raw.patch(
        "/api/v1/namespaces/default/configmaps/applied",
        params={"fieldManager": "t"},
        headers=headers,
        content=manifest.replace("'1'", "'2'"),
    )
    assert r.status_code == 200 and r.json()["data"] == {"a": "2"}


def binding(name: str, node_name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
    }


def test_binding_sets_node_name_once(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    core.create_node(node("n1"))
    created = core.create_namespaced_pod("default", pod("b"))
    # The official client cannot deserialise the Status answer into V1Binding: read it raw.
    resp = core.create_namespaced_pod_binding("b", "default", binding("b", "n1"), _preload_content=False)
    assert resp.status == 201
    assert json.loads(resp.data) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    }
    bound = core.read_namespaced_pod("b", "default")
    assert bound.spec.node_name == "n1"
    assert int(bound.metadata.resource_version) > int(created.metadata.resource_version)
    assert [(c.type, c.status) for c in bound.status.conditions] == [("PodScheduled", "True")]
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod_binding("b", "default", binding("b", "n2"), _preload_content=False)
    assert err.value.status == 409
    assert json.loads(err.value.body)["message"] == (
        'Operation cannot be fulfilled on pods/binding "b": pod b is already assigned to node "n1"'
    )
    assert fake_api.requests_log[-1] == ("admin", "create", "", "pods", "binding", "default")
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items] == ["b"]


def test_binding_errors_and_bindings_collection(raw: httpx.Client) -> None:
    r = raw.post("/api/v1/namespaces/default/pods/ghost/binding", json=binding("ghost", "n1"))
    assert r.status_code == 404
    raw.post("/api/v1/namespaces/default/pods", json=pod("p")).raise_for_status()
    r = raw.post("/api/v1/namespaces/default/pods/p/binding", json=binding("other", "n1"))
    assert r.status_code == 400
    uid_mismatch = binding("p", "n1")
    uid_mismatch["metadata"]["uid"] = "not-the-pod"
    assert raw.post("/api/v1/namespaces/default/pods/p/binding", json=uid_mismatch).status_code == 409
    assert raw.get("/api/v1/namespaces/default/pods/p/binding").status_code == 405
    # The legacy collection endpoint kube-scheduler's old clients used.
    r = raw.post("/api/v1/namespaces/default/bindings", json=binding("p", "n7"))
    assert r.status_code == 201
    assert raw.get("/api/v1/namespaces/default/pods/p").json()["spec"]["nodeName"] == "n7"


def test_concurrent_bindings_exactly_one_wins(
    core: client.CoreV1Api, raw: httpx.Client, fake_api: FakeAPIServer
) -> None:
    import concurrent.futures

    raw.post("/api/v1/namespaces/default/pods", json=pod("race")).raise_for_status()

    def bind(i: int) -> int:
        with httpx.Client(base_url=fake_api.url, headers={"Authorization": "Bearer admin"}, trust_env=False) as c:
            return c.post("/api/v1/namespaces/default/pods/race/binding", json=binding("race", f"n{i}")).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(bind, range(16)))
    assert sorted(codes) == [201] + [409] * 15
