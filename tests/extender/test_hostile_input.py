"""Hostile ExtenderArgs and ExtenderBindingArgs: a wire answer or a 400 — never a 5xx or a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qosgate.extender.app import extender_routes
from qosgate.extender.state import ExtenderSettings, ExtenderState
from qosgate.kube.store import NodeStore, PodStore
from qosgate.serving.http import Request, Response, Router
from tests.extender.memapi import MemoryAPI
from tests.extender.objects import make_node
from tests.webhook.test_hostile_input import OTHER_TYPES, _has, paths


def _router() -> Router:
    pods, nodes = PodStore(), NodeStore()
    pods.replace([], "1")
    nodes.replace([make_node("a", protectable="10Gi"), make_node("b", protectable="4Gi")], "1")
    state = ExtenderState(pods, nodes, ExtenderSettings())
    return Router(extender_routes(state, MemoryAPI(pods), lambda: True))


ROUTER = _router()


def args(form: str) -> dict[str, Any]:
    pod = {"metadata": {"name": "p", "namespace": "team-a", "uid": "u-1",
                        "annotations": {"qosgate.io/memory-min": "1073741824",
                                        "qos-resources.qosgate.io": "memory-qos=gold"}},
           "spec": {"containers": [{"name": "app", "resources": {"requests": {"memory": "1Gi"}}}],
                    "initContainers": [{"name": "i", "restartPolicy": "Always"}]}}
    if form == "names":
        return {"Pod": pod, "Nodes": None, "NodeNames": ["a", "b", "zz"]}
    return {"Pod": pod, "NodeNames": None, "Nodes": {"metadata": {}, "items": [
        {"metadata": {"name": "a", "annotations": {"qosgate.io/qos-classes": "memory-qos=gold:2"}},
         "status": {"allocatable": {"memory": "8Gi"}}},
        {"metadata": {"name": "n2"}, "status": {"allocatable": {"memory": "1Gi"}}}]}}


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    verb = draw(st.sampled_from(["/filter", "/prioritize", "/bind", "/preempt"]))
    if verb == "/bind":
        doc: dict[str, Any] = {"PodName": "p", "PodNamespace": "team-a", "PodUID": "u-1", "Node": "a"}
    elif verb == "/preempt":
        doc = {"Pod": args("names")["Pod"],
               "NodeNameToMetaVictims": {"a": {"Pods": [{"UID": "v-1"}], "NumPDBViolations": 0}},
               "NodeNameToVictims": {"b": {"Pods": [{"metadata": {"uid": "v-2"}}], "NumPDBViolations": 1}}}
    else:
        doc = args(draw(st.sampled_from(["names", "nodes"])))
    targets = [p for p in paths(doc) if p]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(targets))
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step] if isinstance(parent, (dict, list)) and _has(parent, step) else None
        if not isinstance(parent, (dict, list)) or not _has(parent, path[-1]):
            continue
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(OTHER_TYPES)
    return verb, doc


def call(path: str, body: bytes) -> Response:
    return asyncio.run(ROUTER.call(Request("POST", path, body, {"content-type": "application/json"})))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=hostile())
def test_flipped_types_anywhere_give_a_wire_answer_or_a_400(case: tuple[str, dict[str, Any]],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    verb, doc = case
    response = call(verb, json.dumps(doc).encode())
    assert response.status in (200, 400), response
    decoded = orjson.loads(response.body)
    if response.status == 400 or verb in ("/filter", "/bind"):
        assert isinstance(decoded, dict) and "Error" in decoded
    elif verb == "/preempt":
        assert isinstance(decoded, dict) and "NodeNameToMetaVictims" in decoded
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("value", [5, "x", [5], {"a": 1}, True])
def test_init_containers_of_the_wrong_type_are_refused_clearly(value: Any, caplog: pytest.LogCaptureFixture) -> None:
    doc = args("names")
    doc["Pod"]["spec"]["initContainers"] = value
    response = call("/filter", orjson.dumps(doc))
    decoded = orjson.loads(response.body)
    assert "internal error" not in decoded["Error"]
    assert response.status == 400 or decoded["NodeNames"] == [] or decoded["FailedAndUnresolvableNodes"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def huge_nodes_body(nodes: int = 60_000) -> bytes:
    """The `Nodes` form with tens of thousands of Node objects (~20 MB): what a caller can send under the
    128 MiB limit, decoded and decided in the worker pool."""
    doc = args("nodes")
    doc["Nodes"]["items"] = [{"metadata": {"name": f"n{i:06d}", "labels": {"zone": f"z{i % 7}"},
                                           "annotations": {"note": "x" * 200}},
                              "status": {"allocatable": {"memory": "8Gi", "cpu": "4"}}} for i in range(nodes)]
    return orjson.dumps(doc)


def test_a_huge_nodes_body_without_a_client_certificate_is_refused_before_it_is_read(
        extender_cert_dir) -> None:
    """The 128 MiB limit is for kube-scheduler: a caller without a client certificate is answered 401 from its
    headers, and the connection closed, before any of the body it announced is read or buffered."""
    import socket
    import ssl
    import time

    from tests.extender.conftest import EXTENDER_HOSTNAME
    from tests.support.serving import serve_routes

    pods, nodes = PodStore(), NodeStore()
    pods.replace([], "1")
    nodes.replace([make_node("a", protectable="10Gi")], "1")
    routes = extender_routes(ExtenderState(pods, nodes, ExtenderSettings()), MemoryAPI(pods), lambda: True,
                             client_certificate_required=True)
    context = ssl.create_default_context(cafile=str(extender_cert_dir / "ca.crt"))
    with serve_routes(routes, extender_cert_dir, client_ca_file=extender_cert_dir / "ca.crt") as port, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=EXTENDER_HOSTNAME) as tls:
        started = time.monotonic()
        tls.sendall(b"POST /filter HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                    b"content-length: 120000000\r\n\r\n" + b"{" + b" " * 65536)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"client certificate" in answer
    assert waited < 5  # not the body deadline: it never waited for the other 119.9 MB


def test_a_huge_nodes_body_from_the_scheduler_is_decided_node_by_node(extender_cert_dir) -> None:
    """The Nodes form at its realistic worst (60,000 Node objects, ~20 MB): decided in the worker pool and
    answered with every fitting node echoed back."""
    from tests.extender.conftest import EXTENDER_HOSTNAME
    from tests.support.serving import serve_routes
    from tests.support.tls import https_client

    pods, nodes = PodStore(), NodeStore()
    pods.replace([], "1")
    nodes.replace([], "1")
    routes = extender_routes(ExtenderState(pods, nodes, ExtenderSettings()), MemoryAPI(pods), lambda: True,
                             client_certificate_required=True)
    body = huge_nodes_body()
    assert len(body) > 16 * 2**20
    with serve_routes(routes, extender_cert_dir, client_ca_file=extender_cert_dir / "ca.crt") as port, \
            https_client(extender_cert_dir, port, server_hostname=EXTENDER_HOSTNAME, client_cert=True,
                         timeout=120) as client:
        answer = client.post("/filter", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200
    decided = answer.json()
    assert decided["Error"] == "" and decided["FailedNodes"] == {}
    assert len(decided["Nodes"]["items"]) == 60_000  # judged from the scheduler's own copies of the nodes
