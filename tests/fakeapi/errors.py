"""API errors rendered as ``meta.k8s.io/v1`` ``Status`` bodies, the way kube-apiserver reports them.

Every failure inside the fake is raised as :class:`APIError`; the HTTP layer turns it into the
status code + ``Status`` JSON a real client expects (``kubernetes.client.ApiException.body``
carries it verbatim), so client code under test sees the same reason/message/code it would see
against a real cluster.
"""

from __future__ import annotations

from typing import Any

# HTTP code -> the StatusReason kube-apiserver uses for it when nothing more specific applies.
_DEFAULT_REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class APIError(Exception):
    """A request failure that maps 1:1 onto a ``Status`` object."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # An explicit "" is kept: webhook denials may legitimately carry an empty reason.
        self.reason = _DEFAULT_REASONS.get(code, "") if reason is None else reason
        self.details = details
        # Warnings collected before the failure still reach the client as Warning headers.
        self.warnings = warnings or []

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.details:
            body["details"] = self.details
        body["code"] = self.code
        return body


def qualified(resource: str, group: str) -> str:
    """``pods`` / ``deployments.apps`` — how the apiserver names a resource in messages."""
    return f"{resource}.{group}" if group else resource


def _details(resource: str, group: str, name: str) -> dict[str, Any]:
    # Upstream puts the *resource* (plural) into details.kind for these errors.
    d: dict[str, Any] = {"name": name, "kind": resource}
    if group:
        d["group"] = group
    return d


def not_found(resource: str, group: str, name: str) -> APIError:
    return APIError(
        404, f'{qualified(resource, group)} "{name}" not found', "NotFound", _details(resource, group, name)
    )


def already_exists(resource: str, group: str, name: str) -> APIError:
    return APIError(
        409,
        f'{qualified(resource, group)} "{name}" already exists',
        "AlreadyExists",
        _details(resource, group, name),
    )


def conflict(resource: str, group: str, name: str, why: str) -> APIError:
    return APIError(
        409,
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
        "Conflict",
        _details(resource, group, name),
    )


STALE_WHY = "the object has been modified; please apply your changes to the latest version and try again"


def bad_request(message: str) -> APIError:
    return APIError(400, message, "BadRequest")


def internal(message: str) -> APIError:
    return APIError(500, f"Internal error occurred: {message}", "InternalError", {"causes": [{"message": message}]})


def invalid(kind: str, name: str, group: str, causes: list[tuple[str, str, str]]) -> APIError:
    """422 Invalid. ``causes`` = [(field, reason-type, detail)], e.g. ("metadata.name", "FieldValueRequired", ...)."""
    text = ", ".join(f"{field}: {detail}" for field, _t, detail in causes)
    d: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "causes": [{"reason": t, "message": detail, "field": field} for field, t, detail in causes],
    }
    if group:
        d["group"] = group
    if len(causes) > 1:
        text = "[" + text + "]"
    return APIError(422, f'{kind}{"." + group if group else ""} "{name}" is invalid: {text}', "Invalid", d)


def expired(message: str) -> APIError:
    return APIError(410, message, "Expired")


def gone_status(requested: int, oldest: int) -> dict[str, Any]:
    """The Status object carried in a watch ERROR event when the start resourceVersion is compacted."""
    return APIError(410, f"too old resource version: {requested} ({oldest})", "Expired").status()
