"""Scale: 150k pods + 5k nodes seeded, then listed page by page through the official client's transport.

No timing assertions (bench/ prints figures); this proves the paths stay correct and usable at size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from kubernetes import client

from .server import FakeAPIServer

PODS = 150_000
NODES = 5_000


def many_pods() -> Iterator[dict[str, Any]]:
    # A generator: objects are built inside seed(), which pauses the cyclic GC for the bulk load.
    return (
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"p-{i:06d}",
                "namespace": f"ns-{i % 50:02d}",
                "labels": {"app": f"a{i % 10}"},
                "annotations": {"qosgate.io/memory-min": "1048576"},
            },
            "spec": {
                "nodeName": f"n-{i % NODES:04d}",
                "containers": [{"name": "app", "image": "app:1", "resources": {"requests": {"memory": "1Mi"}}}],
            },
            "status": {"phase": "Running"},
        }
        for i in range(PODS)
    )


def test_seed_and_paginate_150k_pods(fake_api: FakeAPIServer, core: client.CoreV1Api) -> None:
    fake_api.seed(many_pods())
    fake_api.seed(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": f"n-{i:04d}"},
            "status": {"allocatable": {"memory": "64Gi"}},
        }
        for i in range(NODES)
    )
    seen = 0
    names: set[str] = set()
    token = None
    list_rv = None
    while True:
        # _preload_content=False: the raw page, as informers read it (model deserialisation is the slow part).
        resp = core.list_pod_for_all_namespaces(limit=5000, _continue=token, _preload_content=False)
        page = orjson.loads(resp.data)
        list_rv = list_rv or page["metadata"]["resourceVersion"]
        assert page["metadata"]["resourceVersion"] == list_rv
        seen += len(page["items"])
        names.update(p["metadata"]["name"] for p in page["items"][:1])
        token = page["metadata"].get("continue")
        if not token:
            break
        assert page["metadata"]["remainingItemCount"] == PODS - seen
    assert seen == PODS and len(names) == PODS // 5000
    nodes = orjson.loads(client.CoreV1Api(core.api_client).list_node(limit=500, _preload_content=False).data)
    assert len(nodes["items"]) == 500 and nodes["metadata"]["remainingItemCount"] == NODES - 500
    on_node = orjson.loads(
        core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n-0007", _preload_content=False).data
    )
    assert len(on_node["items"]) == PODS // NODES
    in_ns = orjson.loads(core.list_namespaced_pod("ns-03", label_selector="app=a3", _preload_content=False).data)
    assert len(in_ns["items"]) == PODS // 50  # every pod in ns-03 has i % 10 == 3
    assert all(p["metadata"]["labels"]["app"] == "a3" for p in in_ns["items"])
