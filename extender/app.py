"""The scheduler extender HTTP shell: /filter, /prioritize, /bind (DESIGN §7) plus health and metrics.

Thin on purpose: read the body, decode (extender/wire.py), decide (extender/state.py), encode. Malformed
requests get a 400 with the reason; nothing a client sends can produce a 500. Decisions a replica must not
take — it is not the Lease leader, or its caches are not synced — come back as the wire's own `Error`
field, which kube-scheduler reports and retries the pod on.

The three verbs are served by a small ASGI layer in front of FastAPI rather than as FastAPI routes: the
scheduler calls filter → prioritize → bind for every pod, one pod at a time, and FastAPI's per-request
routing and Request/Response objects cost about as much as the decision itself (≈0.15 ms of ≈0.35 ms per
call measured on this stack). Health, readiness and metrics stay ordinary FastAPI routes.

filter and prioritize run on the event loop: they are pure CPU under one lock, and a thread hop would only
add latency. bind runs in the threadpool because it waits for the API's answer, and many binds must be in
flight at once for the scheduler's asynchronous binding to pay off.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from qosgate.extender.codec import (
    WireError,
    decode_args,
    decode_binding,
    encode_binding_result,
    encode_filter_error,
    encode_filter_result,
    encode_priorities,
)
from qosgate.extender.state import Binder, ExtenderState
from qosgate.serving.metrics import EXTENDER_LATENCY, EXTENDER_RESULTS

log = logging.getLogger("qosgate.extender")


@functools.cache
def _result(verb: str, outcome: str) -> Any:
    """The labelled counter child, resolved once per (verb, outcome)."""
    return EXTENDER_RESULTS.labels(verb, outcome)

# The `Nodes` form of a 5,000-node cluster carries every Node object (~5–10 KiB each with images).
MAX_ARGS_BYTES = 256 * 1024 * 1024
MAX_BINDING_BYTES = 64 * 1024
NOT_READY = ("this qosgate extender replica is not serving: it is not the leader or its caches are not "
             "synced yet; the scheduler will retry")

# A verb: body → (HTTP status, JSON body).
Handler = Callable[[bytes], Awaitable[tuple[int, bytes]]]
_JSON_HEADERS = [(b"content-type", b"application/json")]


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class VerbRouter:
    """ASGI middleware serving `POST /<verb>` from `handlers`; every other request goes to `app`."""

    def __init__(self, app: ASGIApp, handlers: dict[str, tuple[str, int, Handler]]) -> None:
        self.app = app
        self.handlers = handlers  # path → (metric label, body limit, handler)
        # Labelled children resolved once: .labels() takes a lock and a dict lookup on every call.
        self._latency = {verb: EXTENDER_LATENCY.labels(verb) for verb, _, _ in handlers.values()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = self.handlers.get(scope.get("path", "")) if scope["type"] == "http" else None
        if entry is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        verb, limit, handler = entry
        started = time.perf_counter()
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _TooLarge
            body = await _read_body(receive, limit)
            status, payload = await handler(body)
        except _Disconnected:
            return  # the scheduler gave up (its httpTimeout); nobody to answer
        except _TooLarge:
            _result(verb, "too_large").inc()
            status, payload = 413, encode_binding_result(f"request body larger than {limit} bytes")
        except WireError as exc:
            _result(verb, "malformed").inc()
            status, payload = 400, encode_binding_result(str(exc))
        except Exception as exc:  # a decoder bug on hostile input: still the client's request that failed
            log.exception("%s: unexpected failure", verb)
            _result(verb, "error").inc()
            status, payload = 400, encode_binding_result(f"cannot process this {verb} request "
                                                         f"({type(exc).__name__})")
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
        self._latency[verb].observe(time.perf_counter() - started)


def _health_app(title: str, is_ready: Callable[[], bool]) -> FastAPI:
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        if is_ready():
            return Response("ok", media_type="text/plain")
        return Response("not ready", status_code=503, media_type="text/plain")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _mount(app: FastAPI, prefix: str, filter_: Handler, prioritize: Handler, bind: Handler) -> FastAPI:
    handlers: dict[str, Any] = {
        "/filter": (f"{prefix}filter", MAX_ARGS_BYTES, filter_),
        "/prioritize": (f"{prefix}prioritize", MAX_ARGS_BYTES, prioritize),
        "/bind": (f"{prefix}bind", MAX_BINDING_BYTES, bind),
    }
    app.add_middleware(VerbRouter, handlers=handlers)
    return app


def create_extender_app(state: ExtenderState, binder: Binder, is_ready: Callable[[], bool]) -> FastAPI:
    """The extender for kube-scheduler: `is_ready` = caches synced AND this replica holds the Lease."""

    async def filter_(body: bytes) -> tuple[int, bytes]:
        args = decode_args(body)
        if not is_ready():
            _result("filter", "not_ready").inc()
            return 200, encode_filter_error(args, NOT_READY)
        try:
            result = state.filter(args.pod, args.node_names, args.node_items)
        except Exception:  # a bug: fail this attempt visibly (the scheduler retries), never a 500
            log.exception("filter failed")
            _result("filter", "error").inc()
            return 200, encode_filter_error(args, "qosgate extender internal error; see its logs")
        _result("filter", "fits" if result.passed else "unschedulable").inc()
        return 200, encode_filter_result(args, result.passed, result.failed, result.unresolvable)

    async def prioritize(body: bytes) -> tuple[int, bytes]:
        args = decode_args(body)
        if not is_ready():
            # Prioritize errors are ignored by the scheduler; flat scores say the same without log noise.
            return 200, encode_priorities([(name, 0) for name in args.node_names])
        try:
            scores = state.prioritize(args.pod, args.node_names, args.node_items)
        except Exception:
            log.exception("prioritize failed")
            _result("prioritize", "error").inc()
            scores = [(name, 0) for name in args.node_names]
        return 200, encode_priorities(scores)

    async def bind(body: bytes) -> tuple[int, bytes]:
        args = decode_binding(body)
        if not is_ready():
            _result("bind", "not_ready").inc()
            return 200, encode_binding_result(NOT_READY)
        try:
            error = await to_thread.run_sync(state.bind, args.pod_namespace, args.pod_name, args.pod_uid,
                                             args.node, binder)
        except Exception:
            log.exception("bind failed")
            error = "qosgate extender internal error while binding; see its logs"
        _result("bind", "error" if error else "bound").inc()
        if error:
            log.info("bind refused", extra={"pod": f"{args.pod_namespace}/{args.pod_name}", "node": args.node,
                                            "detail": error})
        return 200, encode_binding_result(error)

    return _mount(_health_app("qosgate scheduler extender", is_ready), "", filter_, prioritize, bind)


def create_null_extender_app() -> FastAPI:
    """Benchmark baseline: same stack and codec, no decisions — every node passes, scores 0, binds nothing."""

    async def filter_(body: bytes) -> tuple[int, bytes]:
        args = decode_args(body)
        return 200, encode_filter_result(args, args.node_names, {}, {})

    async def prioritize(body: bytes) -> tuple[int, bytes]:
        args = decode_args(body)
        return 200, encode_priorities([(name, 0) for name in args.node_names])

    async def bind(body: bytes) -> tuple[int, bytes]:
        decode_binding(body)
        return 200, encode_binding_result("")

    return _mount(_health_app("null scheduler extender", lambda: True), "null_", filter_, prioritize, bind)
