"""/validate over real HTTPS (CA + service DNS name verified as kube-apiserver does)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest

from qosgate.core.catalog import CatalogHolder
from qosgate.core.quota import load_quota_yaml
from qosgate.kube.store import PodStore
from qosgate.webhook.app import MAX_BODY_BYTES, webhook_routes
from qosgate.webhook.quota.engine import QuotaEngine
from qosgate.webhook.quota.source import StaticQuotas
from qosgate.webhook.validate import Validator, build_validator
from tests.support.serving import serve_routes
from tests.support.tls import https_client
from tests.webhook.checks.helpers import gold_pod, quota_configmap, raw_pod

QUOTAS = {
    "team-a": [load_quota_yaml("pod: [{name: memory-qos, classes: [{name: gold, capacity: 10}]}]",
                               "configmap team-a/q")],
    "team-w": [load_quota_yaml("enforcement: warn\npod: []", "configmap team-w/q")],
}


def make_validator() -> Validator:
    store = PodStore()
    store.replace([], "1")
    return build_validator(CatalogHolder(), QuotaEngine(store, StaticQuotas(QUOTAS)))


@pytest.fixture
def server(cert_dir) -> Iterator[Any]:
    """The served /validate route: pod creations the quota engine decides finish in the worker pool."""
    holder = CatalogHolder()
    with serve_routes(webhook_routes(holder, make_validator()), cert_dir) as port, \
            https_client(cert_dir, port, timeout=30) as client:
        yield client


def review(obj: dict[str, Any] | None, *, operation: str = "CREATE", kind: str = "Pod", dry_run: bool = False,
           namespace: str = "team-a", old: dict[str, Any] | None = None, username: str = "alice") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": kind.lower() + "s"},
            "name": (obj or old or {}).get("metadata", {}).get("name", ""), "namespace": namespace,
            "operation": operation, "userInfo": {"username": username, "groups": ["system:authenticated"]},
            "object": obj, "oldObject": old, "dryRun": dry_run, "options": None,
        },
    }


def post(client, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/validate", content=orjson.dumps(body), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    envelope = answer.json()
    assert envelope["apiVersion"] == "admission.k8s.io/v1" and envelope["kind"] == "AdmissionReview"
    response = envelope["response"]
    assert response["uid"] == body["request"]["uid"]
    assert "patch" not in response and "patchType" not in response  # validating responses never patch
    return response


def test_allow_and_capacity_denial_wire_shape(server) -> None:
    assert post(server, review(gold_pod()))["allowed"] is True
    for _ in range(9):
        post(server, review(gold_pod()))
    response = post(server, review(gold_pod()))
    assert response["allowed"] is False
    assert response["status"] == {"code": 403, "reason": "Forbidden",
                                  "message": "qosgate: namespace team-a: memory-qos class gold at capacity 10/10"}


def test_concurrent_requests_are_exact(server) -> None:
    with ThreadPoolExecutor(40) as pool:
        responses = list(pool.map(lambda _: post(server, review(gold_pod())), range(60)))
    assert sum(r["allowed"] for r in responses) == 10


def test_dry_run_over_https(server) -> None:
    for _ in range(12):
        assert post(server, review(gold_pod(), dry_run=True))["allowed"] is True
    assert sum(post(server, review(gold_pod()))["allowed"] for _ in range(11)) == 10


def test_warn_enforcement_returns_warnings(server) -> None:
    response = post(server, review(gold_pod(namespace="team-w"), namespace="team-w"))
    assert response["allowed"] is True
    assert response["warnings"] == ["namespace team-w: memory-qos class gold not allowed (allowed: none)"]


def test_tamper_and_tenant_quota_edit(server) -> None:
    pod = gold_pod()
    pod["metadata"]["annotations"]["qosgate.io/memory-min"] = "1"
    response = post(server, review(pod))
    assert response["allowed"] is False and "qosgate.io/memory-min is '1'" in response["status"]["message"]
    cm = quota_configmap("pod: [{name: memory-qos, classes: [{name: gold, capacity: 1000}]}]")
    response = post(server, review(cm, kind="ConfigMap", operation="UPDATE", old=cm))
    assert response["allowed"] is False and "only qosgate admins" in response["status"]["message"]


def test_classless_pod(server) -> None:
    response = post(server, review(raw_pod()))
    assert set(response) == {"uid", "allowed"} and response["allowed"] is True


def test_malformed_and_oversized_bodies(server) -> None:
    answer = server.post("/validate", content=b"{", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["message"]
    answer = server.post("/validate", content=b"x" * (MAX_BODY_BYTES + 1), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


def test_internal_error_is_a_500_denial(cert_dir) -> None:
    class Broken(Validator):
        def __call__(self, request):
            raise RuntimeError("boom")

    for engine in (None, QuotaEngine(PodStore(), StaticQuotas({}))):  # on the loop, then in the worker pool
        validator = Broken(CatalogHolder(), engine)
        with serve_routes(webhook_routes(CatalogHolder(), validator), cert_dir) as port, \
                https_client(cert_dir, port, timeout=30) as client:
            response = post(client, review(raw_pod()))
        assert response["allowed"] is False and response["status"]["code"] == 500
        assert "internal error" in response["status"]["message"]
