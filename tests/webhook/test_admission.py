from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from qosgate.webhook.admission import (
    API_VERSION,
    KIND,
    WARNING_LIMIT,
    WARNINGS_TOTAL_LIMIT,
    AdmissionResponse,
    BadReview,
    clean_warning,
    decode_review,
    encode_response,
)

UID = "705ab4f5-6393-11e8-b7cc-42010a800002"
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "namespace": "team-a"},
       "spec": {"containers": [{"name": "app", "image": "nginx"}]}}


def review(**request_fields: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": UID,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "",
        "namespace": "team-a",
        "operation": "CREATE",
        "userInfo": {"username": "alice", "uid": "u-1", "groups": ["system:authenticated", "devs"],
                     "extra": {"scopes": ["x"]}},
        "object": POD,
        "oldObject": None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    request.update(request_fields)
    return {"apiVersion": API_VERSION, "kind": KIND, "request": request}


def encode(value: object) -> bytes:
    return orjson.dumps(value)


def bad(body: bytes) -> str:
    with pytest.raises(BadReview) as info:
        decode_review(body)
    return str(info.value)


def response_of(body: bytes) -> dict[str, Any]:
    decoded = orjson.loads(body)
    assert decoded["apiVersion"] == API_VERSION
    assert decoded["kind"] == KIND
    return decoded["response"]


# --- decode: a real request -----------------------------------------------------------------------------


def test_decode_reads_every_field_of_a_create_request() -> None:
    request = decode_review(encode(review()))
    assert request.uid == UID
    assert request.operation == "CREATE"
    assert request.kind_name == "Pod"
    assert request.resource["resource"] == "pods"
    assert request.sub_resource == ""
    assert request.namespace == "team-a"
    assert request.object == POD
    assert request.old_object is None
    assert request.dry_run is False
    assert request.username == "alice"
    assert request.groups == ("system:authenticated", "devs")


def test_decode_accepts_an_empty_name_from_generate_name() -> None:
    assert decode_review(encode(review(name=""))).name == ""


def test_decode_treats_absent_optional_fields_as_empty() -> None:
    body = encode({"apiVersion": API_VERSION, "kind": KIND,
                   "request": {"uid": UID, "operation": "CREATE", "object": POD}})
    request = decode_review(body)
    assert (request.name, request.namespace, request.sub_resource, request.kind_name) == ("", "", "", "")
    assert request.username == ""
    assert request.groups == ()
    assert request.dry_run is False


def test_decode_reads_dry_run_and_subresource_and_old_object() -> None:
    request = decode_review(encode(review(operation="UPDATE", dryRun=True, subResource="status", oldObject=POD)))
    assert request.dry_run is True
    assert request.sub_resource == "status"
    assert request.old_object == POD


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_decode_allows_no_object_for_delete_and_connect(operation: str) -> None:
    assert decode_review(encode(review(operation=operation, object=None))).object is None


# --- decode: malformed reviews --------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe", b'{"a":1}{'])
def test_body_that_is_not_json_is_a_bad_review(body: bytes) -> None:
    assert "not valid JSON" in bad(body)


@pytest.mark.parametrize("body", [b"[]", b'"AdmissionReview"', b"null", b"42"])
def test_body_that_is_not_an_object_is_a_bad_review(body: bytes) -> None:
    assert "must be a JSON object" in bad(body)


@pytest.mark.parametrize(("api_version", "kind"), [("admission.k8s.io/v1beta1", KIND), (API_VERSION, "Pod"),
                                                   (None, KIND), (API_VERSION, None)])
def test_wrong_api_version_or_kind_is_a_bad_review(api_version: str | None, kind: str | None) -> None:
    body = review()
    body["apiVersion"], body["kind"] = api_version, kind
    assert f"expected apiVersion {API_VERSION} kind {KIND}" in bad(encode(body))


@pytest.mark.parametrize("request_value", [None, [], "req"])
def test_missing_or_non_object_request_is_a_bad_review(request_value: object) -> None:
    assert "request is missing" in bad(encode({"apiVersion": API_VERSION, "kind": KIND, "request": request_value}))


@pytest.mark.parametrize("uid", [None, "", 7, ["u"]])
def test_missing_or_non_string_uid_is_a_bad_review(uid: object) -> None:
    assert "request.uid" in bad(encode(review(uid=uid)))


@pytest.mark.parametrize("operation", [None, "create", "PATCH", "", 1])
def test_unknown_operation_is_a_bad_review(operation: object) -> None:
    message = bad(encode(review(operation=operation)))
    assert "request.operation must be one of CREATE, UPDATE, DELETE, CONNECT" in message


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_missing_object_on_create_or_update_is_a_bad_review(operation: str) -> None:
    assert f"request.object is required for {operation}" in bad(encode(review(operation=operation, object=None)))


@pytest.mark.parametrize(("field", "value"), [("object", []), ("object", "pod"), ("oldObject", [1]),
                                              ("oldObject", 3)])
def test_non_object_object_or_old_object_is_a_bad_review(field: str, value: object) -> None:
    assert f"request.{field} must be an object or null" in bad(encode(review(**{field: value})))


@pytest.mark.parametrize(("field", "value"), [("namespace", 5), ("namespace", 0), ("name", []), ("name", False),
                                              ("subResource", {"a": 1}), ("subResource", 0)])
def test_non_string_name_namespace_or_subresource_is_a_bad_review(field: str, value: object) -> None:
    assert f"request.{field} must be a string" in bad(encode(review(**{field: value})))


@pytest.mark.parametrize(("user_info", "fragment"), [
    ("alice", "request.userInfo must be an object"),
    ([], "request.userInfo must be an object"),
    ({"username": 5}, "request.userInfo.username must be a string"),
    ({"username": "a", "groups": "admins"}, "request.userInfo.groups must be a list of strings"),
    ({"username": "a", "groups": ["ok", 5]}, "request.userInfo.groups must be a list of strings"),
])
def test_wrongly_typed_user_info_is_a_bad_review(user_info: object, fragment: str) -> None:
    assert fragment in bad(encode(review(userInfo=user_info)))


@pytest.mark.parametrize("dry_run", ["true", 1, []])
def test_non_boolean_dry_run_is_a_bad_review(dry_run: object) -> None:
    assert "request.dryRun must be a boolean" in bad(encode(review(dryRun=dry_run)))


@pytest.mark.parametrize("field", ["kind", "resource"])
def test_non_object_kind_or_resource_is_a_bad_review(field: str) -> None:
    assert f"request.{field} must be an object" in bad(encode(review(**{field: "Pod"})))


# --- encode ---------------------------------------------------------------------------------------------


def test_allowed_response_echoes_uid_api_version_and_kind() -> None:
    response = response_of(encode_response(UID, AdmissionResponse.allow()))
    assert response == {"uid": UID, "allowed": True}


def test_allowed_response_without_patch_has_no_patch_keys() -> None:
    response = response_of(encode_response(UID, AdmissionResponse.allow([])))
    assert "patch" not in response
    assert "patchType" not in response
    assert "status" not in response


def test_denial_carries_status_not_result() -> None:
    response = response_of(encode_response(UID, AdmissionResponse.deny("qosgate: no")))
    assert response["allowed"] is False
    assert response["status"] == {"code": 403, "reason": "Forbidden", "message": "qosgate: no"}
    assert "result" not in response
    assert response["uid"] == UID


def test_denial_keeps_a_custom_code_and_reason() -> None:
    response = response_of(encode_response(UID, AdmissionResponse.deny("bad", code=400, reason="BadRequest")))
    assert response["status"] == {"code": 400, "reason": "BadRequest", "message": "bad"}


def test_patch_is_base64_json_patch_of_the_ops() -> None:
    ops = [{"op": "add", "path": "/metadata/annotations/a~1b", "value": "1"},
           {"op": "remove", "path": "/metadata/labels/x"}]
    response = response_of(encode_response(UID, AdmissionResponse.allow(ops)))
    assert response["patchType"] == "JSONPatch"
    assert orjson.loads(base64.b64decode(response["patch"], validate=True)) == ops


def test_audit_annotations_are_passed_through() -> None:
    response = AdmissionResponse.allow()
    response.audit_annotations["qosgate.io/decision"] = "gold"
    assert response_of(encode_response(UID, response))["auditAnnotations"] == {"qosgate.io/decision": "gold"}


def test_no_warnings_key_without_warnings() -> None:
    assert "warnings" not in response_of(encode_response(UID, AdmissionResponse.allow(warnings=[])))


def test_warnings_are_passed_through_when_clean() -> None:
    response = response_of(encode_response(UID, AdmissionResponse.allow(warnings=["replaced x", "replaced y"])))
    assert response["warnings"] == ["replaced x", "replaced y"]


@pytest.mark.parametrize("control", ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\x9f"])
def test_control_characters_are_stripped_from_warnings(control: str) -> None:
    response = response_of(encode_response(UID, AdmissionResponse.allow(warnings=[f"a{control}b"])))
    assert response["warnings"] == ["a b"]


def test_non_control_unicode_is_kept_in_warnings() -> None:
    assert clean_warning("größe ≥ 1Gi") == "größe ≥ 1Gi"


def test_long_warning_is_truncated_to_the_preferred_length_with_an_ellipsis() -> None:
    cleaned = clean_warning("x" * 500)
    assert len(cleaned) == WARNING_LIMIT
    assert cleaned.endswith("…")


def test_warning_of_exactly_the_limit_is_untouched() -> None:
    assert clean_warning("y" * WARNING_LIMIT) == "y" * WARNING_LIMIT


def test_warnings_total_is_capped() -> None:
    warnings = [f"{i:03d}" + "w" * 200 for i in range(100)]
    response = response_of(encode_response(UID, AdmissionResponse.allow(warnings=warnings)))
    kept = response["warnings"]
    assert sum(len(w) for w in kept) <= WARNINGS_TOTAL_LIMIT
    assert len(kept) == WARNINGS_TOTAL_LIMIT // WARNING_LIMIT
    assert kept[0].startswith("000")
    assert all(len(w) <= WARNING_LIMIT for w in kept)
