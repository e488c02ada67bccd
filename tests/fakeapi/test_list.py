"""List semantics: selectors, limit/continue pagination, list resourceVersion handling."""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from .objects import configmap, pod
from .server import FakeAPIServer


def names(items: list) -> list[str]:
    return [i.metadata.name if hasattr(i, "metadata") else i["metadata"]["name"] for i in items]


@pytest.fixture
def labelled(fake_api: FakeAPIServer) -> None:
    fake_api.seed(
        [
            pod("a", labels={"app": "web", "tier": "front"}, node="n1", phase="Running"),
            pod("b", labels={"app": "web", "tier": "back"}, node="n2", phase="Running"),
            pod("c", labels={"app": "db"}, phase="Pending"),
            pod("d", namespace="kube-system", labels={"app": "dns", "critical": "yes"}, node="n1", phase="Failed"),
            pod("e", labels={"version": "7"}, phase="Succeeded"),
        ]
    )


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a", "b"]),
        ("app==web", ["a", "b"]),
        ("app!=web", ["c", "d", "e"]),  # a missing key satisfies !=
        ("app in (web,dns)", ["a", "b", "d"]),
        ("app notin (web)", ["c", "d", "e"]),
        ("critical", ["d"]),
        ("!app", ["e"]),
        ("app=web,tier=back", ["b"]),
        ("app in (web, db),!tier", ["c"]),
        ("version>5", ["e"]),
        ("version<5", []),
    ],
)
def test_label_selectors(core: client.CoreV1Api, labelled: None, selector: str, expected: list[str]) -> None:
    assert sorted(names(core.list_pod_for_all_namespaces(label_selector=selector).items)) == expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("spec.nodeName=n1", ["a", "d"]),
        ("spec.nodeName==n2", ["b"]),
        ("spec.nodeName=", ["c", "e"]),  # unscheduled pods, as the scheduler asks
        ("spec.nodeName!=", ["a", "b", "d"]),
        ("status.phase!=Succeeded,status.phase!=Failed", ["a", "b", "c"]),
        ("metadata.namespace=kube-system", ["d"]),
        ("metadata.name=b", ["b"]),
        ("metadata.name!=b,spec.nodeName=n1", ["a", "d"]),
    ],
)
def test_field_selectors(core: client.CoreV1Api, labelled: None, selector: str, expected: list[str]) -> None:
    items = core.list_pod_for_all_namespaces(field_selector=selector).items
    assert sorted(names(items)) == expected


def test_namespaced_list_only_sees_its_namespace(core: client.CoreV1Api, labelled: None) -> None:
    assert names(core.list_namespaced_pod("kube-system").items) == ["d"]
    assert names(core.list_namespaced_pod("default", label_selector="app=dns").items) == []


def test_bad_selectors_are_400(raw: httpx.Client, labelled: None) -> None:
    for params in (
        {"labelSelector": "app in (web"},
        {"labelSelector": "a b"},
        {"fieldSelector": "spec.bogus=1"},
        {"labelSelector": "bad key!=1"},
    ):
        r = raw.get("/api/v1/pods", params=params)
        assert r.status_code == 400, params
        assert r.json()["reason"] == "BadRequest"
    assert (
        "field label not supported: spec.bogus"
        in raw.get("/api/v1/pods", params={"fieldSelector": "spec.bogus=1"}).json()["message"]
    )


def test_pagination_is_a_consistent_snapshot(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    fake_api.seed([configmap(f"cm-{i:03d}") for i in range(25)])
    first = core.list_namespaced_config_map("default", limit=10)
    assert names(first.items) == [f"cm-{i:03d}" for i in range(10)]
    assert first.metadata._continue and first.metadata.remaining_item_count == 15
    list_rv = first.metadata.resource_version
    # Writes between pages are not visible in the continued list (etcd reads at the first page's revision).
    core.create_namespaced_config_map("default", configmap("cm-000a"))
    core.delete_namespaced_config_map("cm-015", "default")
    seen = names(first.items)
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_config_map("default", limit=10, _continue=token)
        assert page.metadata.resource_version == list_rv
        seen += names(page.items)
        token = page.metadata._continue
    assert seen == [f"cm-{i:03d}" for i in range(25)]
    assert page.metadata.remaining_item_count is None


def test_continue_survives_snapshot_eviction_by_replaying_history(fake_api: FakeAPIServer, raw: httpx.Client) -> None:
    fake_api.seed([configmap(f"k{i}") for i in range(6)])
    first = raw.get("/api/v1/namespaces/default/configmaps", params={"limit": 2}).json()
    fake_api._store._snapshots.clear()  # as if many other paginated lists had pushed it out
    raw.post("/api/v1/namespaces/default/configmaps", json=configmap("k0a")).raise_for_status()
    rest = raw.get(
        "/api/v1/namespaces/default/configmaps", params={"limit": 10, "continue": first["metadata"]["continue"]}
    ).json()
    assert names(rest["items"]) == ["k2", "k3", "k4", "k5"]


def test_continue_after_compaction_is_gone(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    fake_api.seed([configmap(f"x{i}") for i in range(5)])
    first = core.list_namespaced_config_map("default", limit=2)
    core.create_namespaced_config_map("default", configmap("newer"))
    fake_api.compact()
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    assert err.value.status == 410
    assert '"reason":"Expired"' in err.value.body.replace(" ", "")


def test_list_with_selector_pages_filtered_results(fake_api: FakeAPIServer, core: client.CoreV1Api) -> None:
    fake_api.seed([pod(f"p{i:02d}", labels={"even": str(i % 2 == 0).lower()}) for i in range(20)])
    got: list[str] = []
    token = None
    while True:
        page = core.list_namespaced_pod("default", label_selector="even=true", limit=3, _continue=token)
        got += names(page.items)
        assert page.metadata.remaining_item_count is None  # unknown with a selector, like upstream
        token = page.metadata._continue
        if not token:
            break
    assert got == [f"p{i:02d}" for i in range(0, 20, 2)]


def test_list_resource_version_semantics(raw: httpx.Client, fake_api: FakeAPIServer) -> None:
    a = raw.post("/api/v1/namespaces/default/configmaps", json=configmap("a")).json()
    raw.post("/api/v1/namespaces/default/configmaps", json=configmap("b")).raise_for_status()
    at_a = a["metadata"]["resourceVersion"]
    exact = raw.get(
        "/api/v1/namespaces/default/configmaps", params={"resourceVersion": at_a, "resourceVersionMatch": "Exact"}
    ).json()
    assert names(exact["items"]) == ["a"] and exact["metadata"]["resourceVersion"] == at_a
    not_older = raw.get("/api/v1/namespaces/default/configmaps", params={"resourceVersion": at_a}).json()
    assert names(not_older["items"]) == ["a", "b"]
    too_new = raw.get("/api/v1/configmaps", params={"resourceVersion": str(fake_api.resource_version + 100)})
    assert too_new.status_code == 504 and too_new.json()["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
    fake_api.compact()
    gone = raw.get(
        "/api/v1/namespaces/default/configmaps", params={"resourceVersion": at_a, "resourceVersionMatch": "Exact"}
    )
    assert gone.status_code == 410


def test_list_items_have_no_type_meta(raw: httpx.Client) -> None:
    raw.post("/api/v1/namespaces/default/configmaps", json=configmap("t")).raise_for_status()
    body = raw.get("/api/v1/namespaces/default/configmaps").json()
    assert body["kind"] == "ConfigMapList" and body["apiVersion"] == "v1"
    assert "kind" not in body["items"][0] and "apiVersion" not in body["items"][0]


def test_delete_collection(raw: httpx.Client, fake_api: FakeAPIServer) -> None:
    fake_api.seed([configmap("keep"), configmap("x1", labels={"gc": "1"}), configmap("x2", labels={"gc": "1"})])
    r = raw.delete("/api/v1/namespaces/default/configmaps", params={"labelSelector": "gc=1"})
    assert r.status_code == 200 and names(r.json()["items"]) == ["x1", "x2"]
    assert [o["metadata"]["name"] for o in fake_api.objects("configmaps")] == ["keep"]
    assert fake_api.requests_log[-1].verb == "deletecollection"
