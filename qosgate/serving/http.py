"""Requests, responses and routes: the transport-free half of the serving layer (architecture §3.1).

A component describes what it serves as a list of :class:`Route`s — bytes in, bytes out — and never sees
a socket. The same :class:`Router` answers the network (``qosgate.serving.server``) and tests that call
:meth:`Router.call` directly, so body limits, content-type checks, client authentication and error mapping
are decided in exactly one place whichever way a request arrives.

Each route states its own body limit (an AdmissionReview is at most a few MiB, an extender binding a few
hundred bytes, a ``Nodes`` list of 5,000 nodes ~100 MiB) and whether its handler runs on the event loop or
in the worker pool: pure decisions that take microseconds stay on the loop (a thread hop costs more than
they do), work that can block (API round trips) or that grows with the input (decoding a large body) is
offloaded so one request can never stall the others.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson

log = logging.getLogger("qosgate.serving")

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
DEFAULT_MAX_BODY = 64 * 1024


@dataclass(slots=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    query: str = ""
    # The verified TLS client certificate (``ssl.SSLObject.getpeercert()``), None without one.
    client_certificate: Mapping[str, Any] | None = None


@dataclass(slots=True, frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, payload: object, status: int = 200) -> Response:
        return cls(status, orjson.dumps(payload))

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode(), TEXT)

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        """Every refusal the serving layer produces: a JSON body with one readable message."""
        return cls(status, orjson.dumps({"message": message}))


@dataclass(slots=True, frozen=True)
class Blocking:
    """Returned by a synchronous handler that decided the rest of its work may block (an API round trip):
    the server finishes it in the worker pool, so the event loop never waits on it."""

    work: Callable[[], Response]


SyncHandler = Callable[[Request], "Response | Blocking"]
AsyncHandler = Callable[[Request], Awaitable[Response]]
Handler = SyncHandler | AsyncHandler
BlockingRunner = Callable[[Callable[[], Response]], Awaitable[Response]]

# offload_above: run a synchronous handler in the worker pool when the body is larger than this many bytes.
ON_LOOP: int | None = None
ALWAYS = 0


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    name: str = ""  # label for metrics; defaults to the path
    max_body: int = DEFAULT_MAX_BODY
    offload_above: int | None = ON_LOOP
    # Media types accepted for the body (compared case-insensitively, parameters ignored); None: any.
    content_types: tuple[str, ...] | None = (JSON,)
    client_certificate_required: bool = False
    # How refusals decided by the serving layer (401, 413, 415) are worded for this route's clients.
    refusal: Callable[[int, str], Response] | None = None
    # Decided once: inspecting the handler on every request cost ~3 µs of a ~75 µs null request.
    _is_async: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_is_async", inspect.iscoroutinefunction(self.handler))

    def refuse(self, status: int, message: str) -> Response:
        return self.refusal(status, message) if self.refusal is not None else Response.error(status, message)

    @property
    def is_async(self) -> bool:
        return self._is_async

    @property
    def label(self) -> str:
        return self.name or self.path

    def offloaded(self, body_size: int) -> bool:
        return self.offload_above is not None and body_size > self.offload_above and not self.is_async


def media_type(content_type: str) -> str:
    """``Application/JSON; charset=utf-8`` → ``application/json`` (RFC 9110: case-insensitive, no params)."""
    return content_type.split(";", 1)[0].strip().lower()


class Router:
    """Routes by exact path; answers 404/405 itself. Immutable once serving starts."""

    def __init__(self, routes: Iterable[Route] = (), name: str = "http") -> None:
        self.name = name
        self._routes: dict[str, dict[str, Route]] = {}
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> None:
        by_method = self._routes.setdefault(route.path, {})
        if route.method in by_method:
            raise ValueError(f"{self.name}: {route.method} {route.path} is routed twice")
        by_method[route.method] = route

    def extend(self, routes: Iterable[Route]) -> Router:
        for route in routes:
            self.add(route)
        return self

    def routes(self) -> list[Route]:
        return [route for by_method in self._routes.values() for route in by_method.values()]

    @property
    def max_body(self) -> int:
        return max((route.max_body for route in self.routes()), default=DEFAULT_MAX_BODY)

    def match(self, method: str, path: str) -> Route | Response:
        by_method = self._routes.get(path)
        if by_method is None:
            return Response.error(404, f"no such path: {path[:200]}")
        route = by_method.get(method)
        if route is None:
            return Response(405, orjson.dumps({"message": f"method {method[:20]} not allowed"}),
                            headers=(("allow", ", ".join(sorted(by_method))),))
        return route

    @staticmethod
    def precheck(route: Route, headers: Mapping[str, str], declared_length: int | None,
                 client_certificate: Mapping[str, Any] | None) -> Response | None:
        """What can be refused before the body is read: authentication, media type, declared size."""
        if route.client_certificate_required and not client_certificate:
            return route.refuse(401, "this endpoint requires a TLS client certificate signed by the "
                                     "client CA qosgate trusts (see manifests/README.md)")
        if route.content_types is not None and route.method in ("POST", "PUT", "PATCH"):
            given = headers.get("content-type")
            if given is not None and media_type(given) not in route.content_types:
                return route.refuse(415, f"content type must be {' or '.join(route.content_types)}, "
                                         f"got {given[:100]!r}")
        if declared_length is not None and declared_length > route.max_body:
            return too_large(route)
        return None

    async def call(self, request: Request, run_blocking: BlockingRunner | None = None) -> Response:
        """Answer one request without any transport (tests; the server calls the pieces itself)."""
        matched = self.match(request.method, request.path)
        if isinstance(matched, Response):
            return matched
        refused = self.precheck(matched, request.headers, len(request.body), request.client_certificate)
        if refused is not None:
            return refused
        return await invoke(matched, request, run_blocking)


def too_large(route: Route) -> Response:
    return route.refuse(413, f"request body larger than {route.max_body} bytes for {route.path}")


# The process holds as many arriving request bytes as it may (Limits.max_receiving_bytes): slow senders are
# holding them. Retryable: the apiserver and kube-scheduler retry, and the bytes free up as bodies complete.
RECEIVING_FULL = Response(503, orjson.dumps({"message": "the server is receiving too many request bodies at "
                                                        "once; retry the request"}), headers=(("retry-after", "1"),))


async def _run_here(work: Callable[[], Response]) -> Response:
    return work()


async def invoke(route: Route, request: Request, run_blocking: BlockingRunner | None = None) -> Response:
    """Run the handler where the route says; a handler that raises is a bug: logged, answered 500.

    Without `run_blocking` (transport-free calls) everything runs in the caller's thread.
    """
    runner = run_blocking or _run_here
    try:
        if route.is_async:
            return await route.handler(request)  # type: ignore[no-any-return, misc]
        handler: SyncHandler = route.handler  # type: ignore[assignment]
        result: Response | Blocking
        if route.offloaded(len(request.body)):
            result = await runner(lambda: finish(handler(request)))
        else:
            result = handler(request)
        if isinstance(result, Blocking):
            return await runner(result.work)
        return result
    except asyncio.CancelledError:
        raise
    except Exception:
        return internal_error(route)


def finish(result: Response | Blocking) -> Response:
    """In a worker thread already: a handler's Blocking rest runs right there."""
    return result.work() if isinstance(result, Blocking) else result


def internal_error(route: Route) -> Response:
    log.exception("%s %s: handler failed", route.method, route.path)
    return Response.error(500, "internal error; see the server log")


_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def reason_phrase(status: int) -> str:
    return _PHRASES.get(status, "Unknown")
