"""/mutate over real HTTPS, verified as kube-apiserver does (CA + service DNS name), patches applied for real."""

from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest

from qosgate.core.catalog import CatalogHolder, load_catalog_yaml
from qosgate.webhook.app import MAX_BODY_BYTES, webhook_routes
from tests.support.serving import serve_routes
from tests.support.tls import https_client

KOORD_CATALOG = """
backends: [koordinator]
resources:
- name: memory-qos
  classes:
  - {name: gold, memoryMinPercent: 100, koordinatorQoSClass: LSR}
  - {name: silver, memoryMinPercent: 50, throttlePercent: 80}
"""


@pytest.fixture(scope="module")
def server(cert_dir) -> Iterator[dict[str, Any]]:
    holder = CatalogHolder()
    with serve_routes(webhook_routes(holder), cert_dir) as port, https_client(cert_dir, port, timeout=10) as client:
        yield {"client": client, "catalog": holder}


def review(obj: dict[str, Any] | None, operation: str = "CREATE", old: dict[str, Any] | None = None,
           dry_run: bool = False, name: str = "web", kind: str = "Pod") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name, "namespace": "team-a", "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": obj, "oldObject": old, "dryRun": dry_run, "options": None,
        },
    }


def pod(annotations: dict[str, str] | None = None, containers: list[dict[str, Any]] | None = None,
        init: list[dict[str, Any]] | None = None, **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "web", "namespace": "team-a", **meta}
    if annotations is not None:
        metadata["annotations"] = annotations
    spec: dict[str, Any] = {"containers": containers or [container("app", "1Gi", "2Gi")]}
    if init:
        spec["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def container(name: str, request: str | None = None, limit: str | None = None, **extra: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if request:
        resources["requests"] = {"memory": request}
    if limit:
        resources["limits"] = {"memory": limit}
    return {"name": name, "image": "nginx", "resources": resources, **extra}


def call(server: dict[str, Any], body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """POST a review; returns the response and the object after applying the patch (None if no object)."""
    answer = server["client"].post("/mutate", json=body)
    assert answer.status_code == 200, answer.text
    envelope = answer.json()
    assert envelope["apiVersion"] == "admission.k8s.io/v1"
    assert envelope["kind"] == "AdmissionReview"
    response = envelope["response"]
    assert response["uid"] == body["request"]["uid"]
    obj = body["request"]["object"]
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        ops = jsonpatch.JsonPatch.from_string(base64.b64decode(response["patch"]).decode())
        obj = ops.apply(copy.deepcopy(obj))
    return response, obj


def test_gold_pod_gets_canonical_and_nri_annotations(server):
    response, patched = call(server, review(pod({"qos-resources.qosgate.io": "memory-qos=gold"})))
    assert response["allowed"] is True
    annotations = patched["metadata"]["annotations"]
    assert annotations["qosgate.io/memory-min"] == str(2**30)
    assert annotations["memory.min.memory-qos.nri.io/app"] == str(2**30)
    assert "memory.high.memory-qos.nri.io/app" not in annotations


@pytest.mark.parametrize(("request_text", "expected"), [
    ("128974848", 128974848), ("129e6", 129000000), ("129M", 129000000), ("123Mi", 128974848),
    ("1.5Gi", 1610612736), ("100m", 1), ("1k", 1000), ("1E3", 1000),
])
def test_every_quantity_form_reaches_memory_min(server, request_text, expected):
    body = review(pod({"qos-resources.qosgate.io": "memory-qos=gold"}, [container("app", request_text)]))
    _, patched = call(server, body)
    assert patched["metadata"]["annotations"]["qosgate.io/memory-min"] == str(expected)


def test_container_class_overrides_pod_default(server):
    annotations = {"qos-resources.qosgate.io": "memory-qos=gold", "qos-resources.qosgate.io/side": "memory-qos=silver"}
    body = review(pod(annotations, [container("app", "1Gi", "2Gi"), container("side", "1Gi", "2Gi")]))
    _, patched = call(server, body)
    result = patched["metadata"]["annotations"]
    assert result["memory.min.memory-qos.nri.io/app"] == str(2**30)
    assert result["memory.min.memory-qos.nri.io/side"] == str(2**29)
    # silver: 1Gi + 0.9 × 1Gi, page aligned
    assert result["memory.high.memory-qos.nri.io/side"] == str((2**30 + 9 * 2**30 // 10) // 4096 * 4096)
    assert result["qosgate.io/memory-min"] == str(2**30 + 2**29)


def test_init_and_sidecar_containers_follow_pod_requests_shape(server):
    init = [container("sidecar", "256Mi", restartPolicy="Always"), container("migrate", "4Gi")]
    body = review(pod({"qos-resources.qosgate.io": "memory-qos=gold"}, [container("app", "1Gi")], init=init))
    _, patched = call(server, body)
    # max(app 1Gi + sidecar 256Mi, migrate 4Gi + sidecar 256Mi started before it)
    assert patched["metadata"]["annotations"]["qosgate.io/memory-min"] == str(4 * 2**30 + 256 * 2**20)
    assert patched["metadata"]["annotations"]["memory.min.memory-qos.nri.io/sidecar"] == str(256 * 2**20)


def test_koordinator_backend_writes_label_and_memory_qos(server):
    server["catalog"].current = load_catalog_yaml(KOORD_CATALOG)
    try:
        response, patched = call(server, review(pod({"qos-resources.qosgate.io": "memory-qos=gold"})))
    finally:
        server["catalog"].current = CatalogHolder().current
    assert response["allowed"] is True
    assert patched["metadata"]["labels"]["koordinator.sh/qosClass"] == "LSR"
    assert patched["metadata"]["annotations"]["koordinator.sh/memoryQOS"] == \
        '{"policy":"auto","minLimitPercent":100,"throttlingPercent":0}'


def test_tampered_backend_annotations_are_overwritten_and_removed(server):
    annotations = {
        "qos-resources.qosgate.io": "memory-qos=silver",
        "memory.min.memory-qos.nri.io/app": str(64 * 2**30),  # a user granting themselves 64Gi
        "memory.min.memory-qos.nri.io/ghost": "1",
        "qosgate.io/memory-min": "0",
        "team": "payments",
    }
    response, patched = call(server, review(pod(annotations)))
    result = patched["metadata"]["annotations"]
    assert result["memory.min.memory-qos.nri.io/app"] == str(2**29)
    assert "memory.min.memory-qos.nri.io/ghost" not in result
    assert result["qosgate.io/memory-min"] == str(2**29)
    assert result["team"] == "payments"
    assert any("replaced annotations" in w for w in response["warnings"])


def test_user_backend_annotations_on_pod_without_classes_are_stripped(server):
    response, patched = call(server, review(pod({"memory.min.memory-qos.nri.io/app": "999999999"})))
    assert response["allowed"] is True
    assert patched["metadata"]["annotations"] == {}


def test_pod_without_requests_is_allowed_untouched(server):
    response, patched = call(server, review(pod({"team": "payments"})))
    assert response["allowed"] is True
    assert "patch" not in response
    assert patched["metadata"]["annotations"] == {"team": "payments"}


def test_pod_without_annotations_map_gets_whole_map_added(server):
    body = review(pod(None, [container("app", "1Gi")]))
    body["request"]["object"]["spec"]["qosResources"] = [{"name": "memory-qos", "class": "gold"}]
    _, patched = call(server, body)
    assert patched["metadata"]["annotations"]["qosgate.io/memory-min"] == str(2**30)


def test_reinvocation_on_patched_pod_changes_nothing(server):
    _, patched = call(server, review(pod({"qos-resources.qosgate.io": "memory-qos=silver"})))
    response, again = call(server, review(patched))
    assert "patch" not in response
    assert again == patched


def test_update_recomputes_like_create(server):
    original = pod({"qos-resources.qosgate.io": "memory-qos=gold"})
    _, created = call(server, review(original))
    tampered = copy.deepcopy(created)
    tampered["metadata"]["annotations"]["memory.min.memory-qos.nri.io/app"] = "1"
    _, updated = call(server, review(tampered, operation="UPDATE", old=created))
    assert updated == created


def test_dry_run_is_answered_like_a_real_request(server):
    response, patched = call(server, review(pod({"qos-resources.qosgate.io": "memory-qos=gold"}), dry_run=True))
    assert response["allowed"] is True
    assert patched["metadata"]["annotations"]["qosgate.io/memory-min"] == str(2**30)


def test_generate_name_pod_with_empty_name_is_mutated(server):
    obj = pod({"qos-resources.qosgate.io": "memory-qos=gold"})
    del obj["metadata"]["name"]
    obj["metadata"]["generateName"] = "web-"
    response, patched = call(server, review(obj, name=""))
    assert response["allowed"] is True
    assert patched["metadata"]["annotations"]["qosgate.io/memory-min"] == str(2**30)


def test_unknown_class_is_denied_naming_field_and_allowed_classes(server):
    response, _ = call(server, review(pod({"qos-resources.qosgate.io": "memory-qos=platinum"})))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert "platinum" in message and "gold" in message and "qos-resources.qosgate.io" in message
    assert "patch" not in response


def test_bad_carrier_syntax_and_duplicates_are_denied(server):
    response, _ = call(server, review(pod({"qos-resources.qosgate.io": "memory-qos=gold,memory-qos=silver"})))
    assert response["allowed"] is False
    assert "more than once" in response["status"]["message"]
    response, _ = call(server, review(pod({"qos-resources.qosgate.io": "memory-qos"})))
    assert "name=class" in response["status"]["message"]


def test_malformed_quantity_is_denied_with_field_path(server):
    body = review(pod({"qos-resources.qosgate.io": "memory-qos=gold"}, [container("app", "12XB")]))
    response, _ = call(server, body)
    assert response["allowed"] is False
    assert "spec.containers[0].resources.requests.memory" in response["status"]["message"]


def test_non_pod_kinds_pass_without_patch(server):
    response, _ = call(server, review({"kind": "Deployment", "metadata": {"name": "d"}}, kind="Deployment"))
    assert response == {"uid": response["uid"], "allowed": True}


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"apiVersion":"v1","kind":"AdmissionReview"}',
                                  b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}'])
def test_malformed_reviews_get_a_400_with_a_message(server, body):
    answer = server["client"].post("/mutate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["message"]


def test_huge_body_is_rejected_with_413(server):
    huge = b'{"pad":"' + b"x" * (MAX_BODY_BYTES + 1) + b'"}'
    answer = server["client"].post("/mutate", content=huge, headers={"content-type": "application/json"})
    assert answer.status_code == 413


def test_wrong_content_type_is_rejected_with_415(server):
    answer = server["client"].post("/mutate", content=b"x", headers={"content-type": "text/plain"})
    assert answer.status_code == 415


def test_wrong_types_inside_pod_are_denied_not_crashing(server):
    body = review(pod({"qos-resources.qosgate.io": "memory-qos=gold"}))
    body["request"]["object"]["spec"]["containers"] = [{"name": "app", "resources": {"requests": {"memory": ["1Gi"]}}}]
    response, _ = call(server, body)
    assert response["allowed"] is False
    assert "requests.memory" in response["status"]["message"]
