"""The extender over real HTTPS with the exact kube-scheduler extender v1 JSON (architecture §7.1)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from qosgate.extender.app import extender_routes, null_extender_routes
from qosgate.extender.state import ExtenderSettings, ExtenderState
from qosgate.kube.store import ADDED, NodeStore, PodStore
from qosgate.serving.health import Readiness, health_routes
from tests.extender.conftest import EXTENDER_HOSTNAME
from tests.extender.memapi import MemoryAPI
from tests.extender.objects import GI, bound, make_node, make_pod
from tests.support.serving import serve_routes
from tests.support.tls import https_client


@dataclass
class Served:
    client: httpx.Client
    api: MemoryAPI
    pods: PodStore
    nodes: NodeStore
    state: ExtenderState
    ready: list[bool]

    def post(self, verb: str, payload: Any) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return self.client.post(f"/{verb}", content=body, headers={"Content-Type": "application/json"})


@pytest.fixture
def served(extender_cert_dir: Path) -> Iterator[Served]:
    pods, nodes = PodStore(), NodeStore()
    pods.replace([], "1")
    nodes.replace([make_node("a", protectable="10Gi"), make_node("b", protectable="10Gi"),
                   make_node("c", protectable="4Gi")], "1")
    pods.apply(ADDED, bound(make_pod("old", 8 * GI), "a"))
    state = ExtenderState(pods, nodes, ExtenderSettings())
    api = MemoryAPI(pods)
    ready = [True]
    readiness = Readiness({"test": lambda: ready[0]})
    routes = [*extender_routes(state, api, readiness, client_certificate_required=True), *health_routes(readiness)]
    with serve_routes(routes, extender_cert_dir, client_ca_file=extender_cert_dir / "ca.crt") as port, \
            https_client(extender_cert_dir, port, server_hostname=EXTENDER_HOSTNAME, client_cert=True) as client:
        yield Served(client, api, pods, nodes, state, ready)
    state.close()


def node_names_args(pod: dict, names: list[str]) -> dict:
    # Exactly what HTTPExtender marshals with nodeCacheCapable: true (Go: nil *NodeList → null).
    return {"Pod": pod, "Nodes": None, "NodeNames": names}


def test_filter_node_names_form(served: Served) -> None:
    response = served.post("filter", node_names_args(make_pod("p", 4 * GI), ["a", "b", "c", "zz"]))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "NodeNames": ["b", "c"],  # c: exactly full afterwards still fits
        "FailedNodes": {"a": "memory.min 4Gi exceeds the free protectable memory",
                        "zz": "node is not in qosgate's node cache yet"},
        "FailedAndUnresolvableNodes": {},
        "Error": "",
    }


def test_filter_reasons_are_exact(served: Served) -> None:
    body = served.post("filter", node_names_args(make_pod("p", 5 * GI), ["a", "b", "c"])).json()
    assert body["NodeNames"] == ["b"]
    assert body["FailedNodes"] == {"a": "memory.min 5Gi exceeds the free protectable memory"}
    assert body["FailedAndUnresolvableNodes"] == {
        "c": "memory.min 5Gi exceeds the node's whole protectable memory"}
    assert set(body) == {"NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}


def test_filter_nodes_form_echoes_the_given_items(served: Served) -> None:
    items = [make_node("a", protectable="10Gi"), make_node("b", protectable="10Gi")]
    node_list = {"metadata": {"resourceVersion": "7"}, "items": items}
    body = served.post("filter", {"Pod": make_pod("p", 4 * GI), "Nodes": node_list, "NodeNames": None}).json()
    assert set(body) == {"Nodes", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}
    assert body["Nodes"] == {"metadata": {"resourceVersion": "7"}, "items": [items[1]]}
    assert list(body["FailedNodes"]) == ["a"] and body["Error"] == ""


def test_returned_names_are_a_subset_of_the_input(served: Served) -> None:
    names = ["b", "a", "c", "b"]  # duplicates and order are the scheduler's business: echo them
    body = served.post("filter", node_names_args(make_pod("p"), names)).json()
    assert body["NodeNames"] == names
    body = served.post("filter", node_names_args(make_pod("p", GI), ["c", "b"])).json()
    assert body["NodeNames"] == ["c", "b"]


def test_input_keys_are_case_insensitive(served: Served) -> None:
    body = served.post("filter", {"pod": make_pod("p", 4 * GI), "nodenames": ["a", "b"]}).json()
    assert body["NodeNames"] == ["b"]
    body = served.post("filter", {"POD": make_pod("p", 4 * GI),
                                  "nodes": {"Items": [make_node("a"), make_node("b")]}}).json()
    assert [n["metadata"]["name"] for n in body["Nodes"]["items"]] == ["b"]
    assert body["FailedNodes"] == {"a": "memory.min 4Gi exceeds the free protectable memory"}


def test_prioritize_host_priority_list(served: Served) -> None:
    response = served.post("prioritize", node_names_args(make_pod("p", GI), ["a", "b"]))
    assert response.status_code == 200
    assert response.json() == [{"Host": "a", "Score": 1}, {"Host": "b", "Score": 9}]


def test_bind_binds_and_reserves(served: Served) -> None:
    pod = make_pod("p", 6 * GI)
    served.api.create(pod)
    served.api.deliver()
    meta = pod["metadata"]
    args = {"PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta["uid"], "Node": "b"}
    response = served.post("bind", args)
    assert response.status_code == 200 and response.json() == {"Error": ""}
    assert served.api.pods[meta["uid"]]["spec"]["nodeName"] == "b"
    # Not yet on the watch, but a second pod cannot take the same room.
    body = served.post("filter", node_names_args(make_pod("q", 6 * GI), ["b"])).json()
    assert body["NodeNames"] == []
    assert body["FailedNodes"] == {"b": "memory.min 6Gi exceeds the free protectable memory"}


def test_bind_error_is_reported_in_the_body(served: Served) -> None:
    args = {"podname": "ghost", "podnamespace": "default", "poduid": "nope", "node": "b"}
    body = served.post("bind", args).json()
    assert set(body) == {"Error"} and "not in qosgate's pod cache" in body["Error"]


@pytest.mark.parametrize("verb,payload,message", [
    ("filter", b"{not json", "not valid JSON"),
    ("filter", b"[]", "must be a JSON object"),
    ("filter", {"NodeNames": ["a"]}, "ExtenderArgs.Pod: required"),
    ("filter", {"Pod": None, "NodeNames": ["a"]}, "ExtenderArgs.Pod: required"),
    ("filter", {"Pod": {}, "NodeNames": "a"}, "NodeNames: must be a list"),
    ("filter", {"Pod": {}, "NodeNames": [1]}, "NodeNames: must be a list"),
    ("filter", {"Pod": {}}, "one of Nodes or NodeNames"),
    ("filter", {"Pod": {}, "Nodes": {"items": [{}]}}, "metadata.name"),
    ("prioritize", b"", "not valid JSON"),
    ("bind", {"PodName": "p"}, "ExtenderBindingArgs.PodNamespace"),
    ("bind", b"\xff", "not valid JSON"),
])
def test_malformed_requests_are_400(served: Served, verb: str, payload: Any, message: str) -> None:
    response = served.post(verb, payload)
    assert response.status_code == 400
    assert message in response.json()["Error"]


def test_not_ready_refuses_decisions(served: Served) -> None:
    served.ready[0] = False
    assert served.client.get("/readyz").status_code == 503
    assert served.client.get("/healthz").status_code == 200
    body = served.post("filter", node_names_args(make_pod("p", GI), ["b"])).json()
    assert body["NodeNames"] == [] and "not the leader" in body["Error"]
    bind = served.post("bind", {"PodName": "p", "PodNamespace": "d", "PodUID": "u", "Node": "b"}).json()
    assert "not the leader" in bind["Error"] and served.api.bind_calls == 0
    scores = served.post("prioritize", node_names_args(make_pod("p", GI), ["b"])).json()
    assert scores == [{"Host": "b", "Score": 0}]
    served.ready[0] = True
    assert served.client.get("/readyz").status_code == 200


def test_null_extender(extender_cert_dir: Path) -> None:
    with serve_routes(null_extender_routes(), extender_cert_dir) as port, \
            https_client(extender_cert_dir, port, server_hostname=EXTENDER_HOSTNAME) as client:
        args = orjson.dumps(node_names_args(make_pod("p", 100 * GI), ["a", "b"]))
        headers = {"Content-Type": "application/json"}
        assert client.post("/filter", content=args, headers=headers).json() == {
            "NodeNames": ["a", "b"], "FailedNodes": {}, "FailedAndUnresolvableNodes": {}, "Error": ""}
        assert client.post("/prioritize", content=args, headers=headers).json() == [
            {"Host": "a", "Score": 0}, {"Host": "b", "Score": 0}]
        binding = orjson.dumps({"PodName": "p", "PodNamespace": "d", "PodUID": "u", "Node": "a"})
        assert client.post("/bind", content=binding, headers=headers).json() == {"Error": ""}


def test_oversized_binding_is_413(served: Served) -> None:
    response = served.post("bind", b"{" + b" " * (65 * 1024) + b"}")
    assert response.status_code == 413 and "larger than" in response.json()["Error"]


def test_other_methods_and_paths_are_not_verbs(served: Served) -> None:
    assert served.client.get("/filter").status_code in (404, 405)
    assert served.client.get("/metrics").status_code == 200
