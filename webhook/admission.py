"""admission.k8s.io/v1 AdmissionReview codec (architecture §7.2): decode a request, encode a response.

Kept apart from HTTP so the admission logic is a pure function of the decoded request.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from qosgate.core.errors import MAX_MESSAGE

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
# Go unicode.IsControl: C0, DEL and C1. The apiserver drops a warning containing any of them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
WARNING_LIMIT = 120
WARNINGS_TOTAL_LIMIT = 4096


class BadReview(ValueError):
    """The body is not an AdmissionReview we can answer: the HTTP layer turns this into a 400."""


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    operation: str
    kind: Mapping[str, str]
    resource: Mapping[str, str]
    sub_resource: str
    namespace: str
    name: str
    user_info: Mapping[str, Any]
    object: Mapping[str, Any] | None
    old_object: Mapping[str, Any] | None
    dry_run: bool

    @property
    def kind_name(self) -> str:
        return self.kind.get("kind", "")

    @property
    def username(self) -> str:
        return str(self.user_info.get("username", ""))

    @property
    def groups(self) -> tuple[str, ...]:
        groups = self.user_info.get("groups") or ()
        return tuple(g for g in groups if isinstance(g, str))


@dataclass(slots=True)
class AdmissionResponse:
    allowed: bool
    patch: Sequence[Mapping[str, Any]] = ()
    code: int = 200
    message: str = ""
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    audit_annotations: dict[str, str] = field(default_factory=dict)
    # The patch already encoded (base64 of its JSON): a memoised decision carries it, encoded once.
    encoded_patch: str | None = None

    @classmethod
    def allow(cls, patch: Sequence[Mapping[str, Any]] = (), warnings: list[str] | None = None) -> AdmissionResponse:
        return cls(allowed=True, patch=patch, warnings=warnings or [])

    @classmethod
    def deny(cls, message: str, code: int = 403, reason: str = "Forbidden") -> AdmissionResponse:
        return cls(allowed=False, code=code, message=message, reason=reason)


def _gvk(value: object, path: str) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadReview(f"request.{path} must be an object")
    for key, item in value.items():
        if not isinstance(item, str):
            raise BadReview(f"request.{path}.{key} must be a string")
    return value


def decode_review(body: bytes) -> AdmissionRequest:
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"body is not valid JSON: {exc}") from None
    if not isinstance(review, dict):
        raise BadReview("body must be a JSON object (an AdmissionReview)")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise BadReview(f"expected apiVersion {API_VERSION} kind {KIND}, got "
                        f"{review.get('apiVersion')!r} {review.get('kind')!r}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("request is missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid must be a non-empty string")
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise BadReview(f"request.operation must be one of {', '.join(OPERATIONS)}, got {operation!r}")
    obj, old = request.get("object"), request.get("oldObject")
    if obj is not None and not isinstance(obj, dict):
        raise BadReview("request.object must be an object or null")
    if old is not None and not isinstance(old, dict):
        raise BadReview("request.oldObject must be an object or null")
    if operation in ("CREATE", "UPDATE") and obj is None:
        raise BadReview(f"request.object is required for {operation}")
    user_info = request.get("userInfo")
    if user_info is None:
        user_info = {}
    if not isinstance(user_info, dict):
        raise BadReview("request.userInfo must be an object")
    if user_info.get("username") is not None and not isinstance(user_info["username"], str):
        raise BadReview("request.userInfo.username must be a string")
    groups = user_info.get("groups")
    if groups is not None and (not isinstance(groups, list) or not all(isinstance(g, str) for g in groups)):
        raise BadReview("request.userInfo.groups must be a list of strings")
    for text_field in ("namespace", "name", "subResource"):
        if request.get(text_field) is not None and not isinstance(request.get(text_field), str):
            raise BadReview(f"request.{text_field} must be a string")
    if request.get("dryRun") is not None and not isinstance(request.get("dryRun"), bool):
        raise BadReview("request.dryRun must be a boolean")
    return AdmissionRequest(
        uid=uid, operation=operation, kind=_gvk(request.get("kind"), "kind"),
        resource=_gvk(request.get("resource"), "resource"), sub_resource=request.get("subResource") or "",
        namespace=request.get("namespace") or "", name=request.get("name") or "", user_info=user_info,
        object=obj, old_object=old, dry_run=bool(request.get("dryRun")),
    )


def clean_warning(text: str) -> str:
    """apiserver rules: no control characters, keep it short (truncated at 256, 120 preferred)."""
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= WARNING_LIMIT else text[: WARNING_LIMIT - 1] + "…"


def encode_patch(patch: Sequence[Mapping[str, Any]]) -> str:
    return base64.b64encode(orjson.dumps(list(patch))).decode()


def encode_response(uid: str, response: AdmissionResponse) -> bytes:
    body: dict[str, Any] = {"uid": uid, "allowed": response.allowed}
    if not response.allowed:
        message = response.message
        if len(message) > 2 * MAX_MESSAGE:  # a safety net: every producer already bounds what it says
            message = message[: 2 * MAX_MESSAGE - 1] + "…"
        body["status"] = {"code": response.code, "reason": response.reason, "message": message}
    if response.patch:
        body["patchType"] = "JSONPatch"
        body["patch"] = response.encoded_patch or encode_patch(response.patch)
    if response.warnings:
        warnings, total = [], 0
        for warning in map(clean_warning, response.warnings):
            total += len(warning)
            if total > WARNINGS_TOTAL_LIMIT:
                break
            warnings.append(warning)
        body["warnings"] = warnings
    if response.audit_annotations:
        body["auditAnnotations"] = response.audit_annotations
    return orjson.dumps({"apiVersion": API_VERSION, "kind": KIND, "response": body})
