"""Raw JSON requests to kube-apiserver over `qosgate.kube.transport.KubeClient`, decoded with orjson.

The official client's generated API classes deserialise every response into model objects; for 150,000 pods
that costs more than everything else together, and models drop fields they do not know. Requests here send
and receive plain JSON; `open_request` hands a watch its unread response to read line by line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import urllib3

from qosgate.kube.transport import KubeClient, KubeError, Timeout, TransportError

__all__ = ["DEFAULT_TIMEOUT", "ApiError", "KubeClient", "KubeError", "TransportError", "open_request",
           "request_json", "status_error"]

# (connect, read) seconds for ordinary requests; watches pass their own.
DEFAULT_TIMEOUT = (5.0, 30.0)
_JSON = "application/json"


class ApiError(KubeError):
    """The API server answered with a non-2xx status; `status` is the HTTP code, `reason` the Status reason."""

    def __init__(self, status: int, reason: str, message: str, body: Mapping[str, Any] | None = None):
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body
        super().__init__(f"HTTP {status} {reason}: {message}" if message else f"HTTP {status} {reason}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: a stale resourceVersion on update, or AlreadyExists on create."""
        return self.status == 409

    @property
    def gone(self) -> bool:
        """410: the resourceVersion (or continue token) is older than the server still remembers."""
        return self.status == 410


def status_error(status: int, data: bytes, fallback_reason: str = "") -> ApiError:
    """Build an ApiError from a response body, using the Status object when the server sent one."""
    body: Any = None
    try:
        body = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        found = body.get("code")
        code = found if isinstance(found, int) else status
        return ApiError(code, str(body.get("reason") or fallback_reason), str(body.get("message") or ""), body)
    text = data[:500].decode("utf-8", "replace").strip() if data else ""
    return ApiError(status, fallback_reason, text, body if isinstance(body, dict) else None)


def open_request(
    api_client: KubeClient,
    method: str,
    path: str,
    *,
    query: Sequence[tuple[str, str]] = (),
    body: Mapping[str, Any] | None = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    accept: str = _JSON,
) -> urllib3.BaseHTTPResponse:
    """Send a request and return the *unread* response after checking its status.

    The caller owns the response (read it, then `release_conn()`), which is what a watch needs to read
    line by line. Non-2xx statuses are read, released and raised as ApiError; no answer is TransportError.
    """
    headers = {"Accept": accept}
    data = None
    if body is not None:
        headers["Content-Type"] = _JSON
        data = orjson.dumps(body)
    response = api_client.request(method, path, query=query, body=data, headers=headers, timeout=timeout)
    if not 200 <= response.status < 300:
        try:
            answer = response.data
        except (urllib3.exceptions.HTTPError, OSError):
            answer = b""
        finally:
            response.release_conn()
        raise status_error(response.status, answer, response.reason or "")
    return response


def request_json(
    api_client: KubeClient,
    method: str,
    path: str,
    *,
    query: Sequence[tuple[str, str]] = (),
    body: Mapping[str, Any] | None = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """One request, whole JSON answer decoded with orjson. Raises ApiError / TransportError."""
    response = open_request(api_client, method, path, query=query, body=body, timeout=timeout)
    try:
        data = response.data
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransportError(f"{method} {path}: reading the answer failed: {exc}") from exc
    finally:
        response.release_conn()
    try:
        decoded = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError as exc:
        raise TransportError(f"{method} {path}: the answer is not JSON: {exc}") from exc
    if not isinstance(decoded, dict):
        raise TransportError(f"{method} {path}: expected a JSON object, got {type(decoded).__name__}")
    return decoded
