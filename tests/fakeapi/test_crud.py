"""CRUD semantics through the official client (and raw HTTP for wire details)."""

from __future__ import annotations

import json

import httpx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from .objects import configmap, namespace, node, pod
from .server import FakeAPIServer


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_create_get_list_delete_roundtrip(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", pod("web"))
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert created.metadata.generation == 1
    assert created.status.phase == "Pending"
    got = core.read_namespaced_pod("web", "default")
    assert got.metadata.resource_version == created.metadata.resource_version
    assert [p.metadata.name for p in core.list_namespaced_pod("default").items] == ["web"]
    deleted = core.delete_namespaced_pod("web", "default")
    assert deleted.metadata.name == "web"  # pods answer DELETE with the object
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("web", "default")
    assert err.value.status == 404
    body = status_of(err.value)
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "web" not found',
        "reason": "NotFound",
        "details": {"name": "web", "kind": "pods"},
        "code": 404,
    }


def test_delete_of_a_configmap_answers_a_success_status(raw: httpx.Client) -> None:
    raw.post("/api/v1/namespaces/default/configmaps", json=configmap("cm")).raise_for_status()
    body = raw.delete("/api/v1/namespaces/default/configmaps/cm").json()
    assert body["kind"] == "Status" and body["status"] == "Success"
    assert body["details"]["name"] == "cm" and body["details"]["kind"] == "configmaps" and body["details"]["uid"]


def test_already_exists_and_group_qualified_messages(fake_api: FakeAPIServer, api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("default", configmap("a"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", configmap("a"))
    assert err.value.status == 409
    assert status_of(err.value)["reason"] == "AlreadyExists"
    assert status_of(err.value)["message"] == 'configmaps "a" already exists'
    apps = client.AppsV1Api(api_client)
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("nope", "default")
    assert status_of(err.value)["message"] == 'deployments.apps "nope" not found'
    assert status_of(err.value)["details"] == {"name": "nope", "kind": "deployments", "group": "apps"}


def test_generate_name(core: client.CoreV1Api) -> None:
    names = {core.create_namespaced_pod("default", pod(generate_name="worker-")).metadata.name for _ in range(5)}
    assert len(names) == 5
    for n in names:
        assert n.startswith("worker-") and len(n) == len("worker-") + 5


def test_missing_name_is_invalid(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("default", pod())
    assert err.value.status == 422
    body = status_of(err.value)
    assert body["reason"] == "Invalid"
    assert "name or generateName is required" in body["message"]


def test_resource_versions_are_global_and_monotonic(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    seen = []
    for i in range(3):
        seen.append(int(core.create_namespaced_config_map("default", configmap(f"c{i}")).metadata.resource_version))
        seen.append(int(core.create_namespaced_pod("default", pod(f"p{i}")).metadata.resource_version))
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    list_rv = int(core.list_namespaced_config_map("default").metadata.resource_version)
    assert list_rv == seen[-1] == fake_api.resource_version


def test_stale_update_conflicts(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("cfg", data={"a": "1"}))
    first = core.read_namespaced_config_map("cfg", "default")
    second = core.read_namespaced_config_map("cfg", "default")
    first.data = {"a": "2"}
    updated = core.replace_namespaced_config_map("cfg", "default", first)
    assert int(updated.metadata.resource_version) > int(second.metadata.resource_version)
    second.data = {"a": "3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cfg", "default", second)
    assert err.value.status == 409
    body = status_of(err.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on configmaps "cfg": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert core.read_namespaced_config_map("cfg", "default").data == {"a": "2"}


def test_update_without_resource_version_is_unconditional_and_missing_is_404(raw: httpx.Client) -> None:
    raw.post("/api/v1/namespaces/default/configmaps", json=configmap("x", data={"k": "1"})).raise_for_status()
    r = raw.put("/api/v1/namespaces/default/configmaps/x", json=configmap("x", data={"k": "2"}))
    assert r.status_code == 200 and r.json()["data"] == {"k": "2"}
    r = raw.put("/api/v1/namespaces/default/configmaps/ghost", json=configmap("ghost"))
    assert r.status_code == 404 and r.json()["reason"] == "NotFound"
    r = raw.put("/api/v1/namespaces/default/configmaps/x", json=configmap("other"))
    assert r.status_code == 400 and "does not match the name on the URL" in r.json()["message"]


def test_noop_update_keeps_the_resource_version(raw: httpx.Client) -> None:
    cm = raw.post("/api/v1/namespaces/default/configmaps", json=configmap("same", data={"k": "v"})).json()
    again = raw.put("/api/v1/namespaces/default/configmaps/same", json=cm).json()
    assert again["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]


def test_delete_preconditions(raw: httpx.Client) -> None:
    cm = raw.post("/api/v1/namespaces/default/configmaps", json=configmap("pre")).json()
    r = raw.request(
        "DELETE",
        "/api/v1/namespaces/default/configmaps/pre",
        json={"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": "1"}},
    )
    assert r.status_code == 409 and "Precondition failed" in r.json()["message"]
    r = raw.request(
        "DELETE",
        "/api/v1/namespaces/default/configmaps/pre",
        json={"preconditions": {"resourceVersion": cm["metadata"]["resourceVersion"], "uid": cm["metadata"]["uid"]}},
    )
    assert r.status_code == 200


def test_namespaces_must_exist_and_deleting_one_removes_its_contents(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("team-a", pod("p", "team-a"))
    assert err.value.status == 404 and status_of(err.value)["message"] == 'namespaces "team-a" not found'
    ns = core.create_namespace(namespace("team-a"))
    assert ns.metadata.labels == {"kubernetes.io/metadata.name": "team-a"}
    assert ns.status.phase == "Active" and ns.spec.finalizers == ["kubernetes"]
    core.create_namespaced_pod("team-a", pod("p", "team-a"))
    core.create_namespaced_config_map("team-a", configmap("c", "team-a"))
    core.delete_namespace("team-a")
    assert core.list_pod_for_all_namespaces().items == []
    assert [c.metadata.name for c in core.list_config_map_for_all_namespaces().items] == []


def test_namespace_in_body_must_match_url(raw: httpx.Client) -> None:
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("p", namespace="kube-system"))
    assert r.status_code == 400
    assert (
        r.json()["message"] == "the namespace of the provided object does not match the namespace sent on the request"
    )


def test_pod_defaults_and_qos_class(core: client.CoreV1Api) -> None:
    burstable = core.create_namespaced_pod("default", pod("b", memory="64Mi"))
    assert burstable.status.qos_class == "Burstable"
    best = core.create_namespaced_pod("default", pod("be"))
    assert best.status.qos_class == "BestEffort"
    guaranteed = pod("g")
    guaranteed["spec"]["containers"][0]["resources"] = {"limits": {"memory": "1Gi", "cpu": "500m"}}
    g = core.create_namespaced_pod("default", guaranteed)
    assert g.status.qos_class == "Guaranteed"
    # requests default from limits at decode time: webhooks and memory math see them
    assert g.spec.containers[0].resources.requests == {"memory": "1Gi", "cpu": "500m"}
    assert g.spec.scheduler_name == "default-scheduler" and g.spec.restart_policy == "Always"
    assert g.spec.containers[0].image_pull_policy == "IfNotPresent"


def test_user_status_is_ignored_on_create_and_main_update(raw: httpx.Client) -> None:
    body = pod("s", phase="Running")
    created = raw.post("/api/v1/namespaces/default/pods", json=body).json()
    assert created["status"]["phase"] == "Pending"
    created["status"]["phase"] = "Running"
    updated = raw.put("/api/v1/namespaces/default/pods/s", json=created).json()
    assert updated["status"]["phase"] == "Pending"
    assert updated["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    via_status = raw.put("/api/v1/namespaces/default/pods/s/status", json=created).json()
    assert via_status["status"]["phase"] == "Running"
    assert int(via_status["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_status_subresource_cannot_change_spec(raw: httpx.Client) -> None:
    created = raw.post("/api/v1/namespaces/default/pods", json=pod("s")).json()
    created["spec"]["nodeName"] = "sneaky"
    created["status"] = {"phase": "Running"}
    after = raw.put("/api/v1/namespaces/default/pods/s/status", json=created).json()
    assert "nodeName" not in after["spec"] and after["status"]["phase"] == "Running"


def test_pod_spec_is_immutable_except_images(raw: httpx.Client) -> None:
    created = raw.post("/api/v1/namespaces/default/pods", json=pod("imm")).json()
    created["spec"]["containers"][0]["image"] = "registry.example/app:2.0"
    ok = raw.put("/api/v1/namespaces/default/pods/imm", json=created)
    assert ok.status_code == 200 and ok.json()["metadata"]["generation"] == 2
    changed = ok.json()
    changed["spec"]["nodeName"] = "n1"
    r = raw.put("/api/v1/namespaces/default/pods/imm", json=changed)
    assert r.status_code == 422
    assert r.json()["reason"] == "Invalid" and "pod updates may not change fields" in r.json()["message"]


def test_unknown_fields_are_dropped_with_a_warning_or_rejected_when_strict(raw: httpx.Client) -> None:
    body = pod("u")
    body["spec"]["qosResources"] = [{"name": "memory-qos", "class": "gold"}]
    r = raw.post("/api/v1/namespaces/default/pods", json=body)
    assert r.status_code == 201
    assert "qosResources" not in r.json()["spec"]
    assert r.headers.get_list("warning") == ['299 - "unknown field \\"spec.qosResources\\""']
    body["metadata"]["name"] = "u2"
    r = raw.post("/api/v1/namespaces/default/pods", params={"fieldValidation": "Strict"}, json=body)
    assert r.status_code == 400
    assert r.json()["message"] == 'strict decoding error: unknown field "spec.qosResources"'


def test_wrongly_typed_values_fail_decoding(raw: httpx.Client) -> None:
    body = pod("t", annotations={"x": "1"})
    body["metadata"]["annotations"]["x"] = 1
    r = raw.post("/api/v1/namespaces/default/pods", json=body)
    assert r.status_code == 400
    assert "cannot unmarshal number into Go struct field ObjectMeta.metadata.annotations" in r.json()["message"]


def test_invalid_annotation_key_is_rejected(raw: httpx.Client) -> None:
    r = raw.post("/api/v1/namespaces/default/pods", json=pod("k", annotations={"bad key": "v"}))
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "metadata.annotations"


def test_dry_run_create_stores_nothing(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    before = fake_api.resource_version
    out = core.create_namespaced_pod("default", pod(generate_name="dry-"), dry_run="All")
    assert out.metadata.name.startswith("dry-") and out.metadata.uid
    assert core.list_namespaced_pod("default").items == []
    assert fake_api.resource_version == before


def test_finalizers_hold_deletion_until_removed(raw: httpx.Client) -> None:
    cm = configmap("fin")
    cm["metadata"]["finalizers"] = ["example.com/hold"]
    raw.post("/api/v1/namespaces/default/configmaps", json=cm).raise_for_status()
    marked = raw.delete("/api/v1/namespaces/default/configmaps/fin").json()
    assert marked["kind"] == "ConfigMap" and marked["metadata"]["deletionTimestamp"]
    r = raw.patch(
        "/api/v1/namespaces/default/configmaps/fin",
        content=b'{"metadata":{"finalizers":null}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200
    assert raw.get("/api/v1/namespaces/default/configmaps/fin").status_code == 404


def test_nodes_keep_status_on_create_and_leases_and_workloads_work(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    n = core.create_node(node("n1", "32Gi"))
    assert n.status.allocatable["memory"] == "32Gi"
    coord = client.CoordinationV1Api(api_client)
    lease = coord.create_namespaced_lease(
        "kube-system",
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "qosgate"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
        },
    )
    lease.spec.holder_identity = "b"
    assert coord.replace_namespaced_lease("qosgate", "kube-system", lease).spec.holder_identity == "b"
    apps = client.AppsV1Api(api_client)
    dep = apps.create_namespaced_deployment(
        "default",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i:1"}]},
                },
            },
            "status": {"replicas": 9},
        },
    )
    assert dep.metadata.generation == 1 and dep.spec.replicas == 1 and not dep.status.replicas
    batch = client.BatchV1Api(api_client)
    job = batch.create_namespaced_job(
        "default",
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i:1"}]}}},
        },
    )
    assert job.metadata.uid
    assert [d.metadata.name for d in apps.list_deployment_for_all_namespaces().items] == ["d"]


def test_authentication_and_authorization(fake_api: FakeAPIServer, raw: httpx.Client) -> None:
    anon = httpx.get(fake_api.url + "/api/v1/pods", trust_env=False)
    assert anon.status_code == 401 and anon.json()["reason"] == "Unauthorized"
    fake_api.add_user("tenant-token", "alice", ["team-a"])
    fake_api.authorizer = lambda user, rec: not (user.username == "alice" and rec.verb == "create")
    r = httpx.post(
        fake_api.url + "/api/v1/namespaces/default/configmaps",
        json=configmap("x"),
        headers={"Authorization": "Bearer tenant-token"},
        trust_env=False,
    )
    assert r.status_code == 403
    assert r.json()["message"] == (
        'configmaps is forbidden: User "alice" cannot create resource "configmaps" '
        'in API group "" in the namespace "default"'
    )
    assert ("alice", "create", "", "configmaps", "", "default") in fake_api.requests_log


def test_requests_log_uses_rbac_verbs(fake_api: FakeAPIServer, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("p"))
    core.read_namespaced_pod("p", "default")
    core.list_pod_for_all_namespaces()
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"a": "b"}}})
    core.replace_namespaced_pod_status("p", "default", core.read_namespaced_pod("p", "default"))
    core.delete_namespaced_pod("p", "default")
    verbs = [(r.verb, r.resource, r.subresource, r.namespace) for r in fake_api.requests_log]
    assert verbs == [
        ("create", "pods", "", "default"),
        ("get", "pods", "", "default"),
        ("list", "pods", "", ""),
        ("patch", "pods", "", "default"),
        ("get", "pods", "", "default"),
        ("update", "pods", "status", "default"),
        ("delete", "pods", "", "default"),
    ]
    assert all(r.username == "admin" for r in fake_api.requests_log)


def test_discovery_and_version(raw: httpx.Client, fake_api: FakeAPIServer) -> None:
    assert httpx.get(fake_api.url + "/version", trust_env=False).json()["major"] == "1"
    core = raw.get("/api/v1").json()
    names = {r["name"] for r in core["resources"]}
    assert {"pods", "pods/binding", "pods/status", "nodes", "namespaces", "configmaps", "secrets"} <= names
    groups = {g["name"] for g in raw.get("/apis").json()["groups"]}
    assert {"apps", "batch", "coordination.k8s.io"} <= groups
    leases = raw.get("/apis/coordination.k8s.io/v1").json()
    assert leases["resources"][0]["name"] == "leases"
    assert raw.get("/apis/nope/v1").status_code == 404


def test_unknown_resource_and_bad_method(raw: httpx.Client) -> None:
    assert raw.get("/api/v1/widgets").status_code == 404
    r = raw.put("/api/v1/namespaces/default/pods", json={})
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"
    assert raw.post("/api/v1/pods", json=pod("p")).status_code == 405
    assert raw.get("/api/v1/pods/p").status_code == 404


def test_helpers_bypass_http(fake_api: FakeAPIServer, core: client.CoreV1Api) -> None:
    rv = fake_api.seed([pod("seeded"), node("n9")])
    got = fake_api.get_object("pods", "default", "seeded")
    assert got is not None and got["kind"] == "Pod" and got["metadata"]["resourceVersion"] == str(rv - 1)
    assert fake_api.get_object("v1/nodes", None, "n9") is not None
    assert fake_api.get_object("Pod", "default", "nope") is None
    got["metadata"]["name"] = "mutated"  # a private copy: the store is untouched
    assert [p["metadata"]["name"] for p in fake_api.objects("pods")] == ["seeded"]
    assert core.read_namespaced_pod("seeded", "default").metadata.uid == got["metadata"]["uid"]
    assert fake_api.requests_log[-1].verb == "get"
