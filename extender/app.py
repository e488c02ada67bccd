"""The scheduler extender HTTP shell: /filter, /prioritize, /bind (DESIGN §7) plus health and metrics.

Thin on purpose: read the body, decode (extender/wire.py), decide (extender/state.py), encode. Malformed
requests get a 400 with the reason; nothing a client sends can produce a 500. Decisions a replica must not
take — it is not the Lease leader, or its caches are not synced — come back as the wire's own `Error`
field, which kube-scheduler reports and retries the pod on.

filter and prioritize run on the event loop: they are pure CPU under one lock, and a thread hop would only
add latency. bind runs in the threadpool because it waits for the API's answer, and many binds must be in
flight at once for the scheduler's asynchronous binding to pay off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from extender.state import Binder, ExtenderState
from extender.wire import (
    WireError,
    decode_args,
    decode_binding,
    encode_binding_result,
    encode_filter_error,
    encode_filter_result,
    encode_priorities,
)
from qosgate.metrics import EXTENDER_LATENCY, EXTENDER_RESULTS

log = logging.getLogger("qosgate.extender")

JSON = "application/json"
# The `Nodes` form of a 5,000-node cluster carries every Node object (~10 KiB each with images).
MAX_ARGS_BYTES = 256 * 1024 * 1024
MAX_BINDING_BYTES = 64 * 1024
NOT_READY = ("this qosgate extender replica is not serving: it is not the leader or its caches are not "
             "synced yet; the scheduler will retry")


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> Response:
    return Response(encode_binding_result(message), status_code=status, media_type=JSON)


def _json(body: bytes) -> Response:
    return Response(body, media_type=JSON)


Handler = Callable[[Request, bytes], Awaitable[Response]]


def _verb(verb: str, limit: int, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Common shell: size limit, 400 on malformed input, latency metric, no 500s."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await _read_body(request, limit)
        except _TooLarge:
            EXTENDER_RESULTS.labels(verb, "too_large").inc()
            return _error(413, f"request body larger than {limit} bytes")
        try:
            response = await handler(request, body)
        except WireError as exc:
            EXTENDER_RESULTS.labels(verb, "malformed").inc()
            return _error(400, str(exc))
        except Exception as exc:  # a decoder bug on hostile input: still the client's request that failed
            log.exception("%s: unexpected failure", verb)
            EXTENDER_RESULTS.labels(verb, "error").inc()
            return _error(400, f"cannot process this {verb} request ({type(exc).__name__})")
        EXTENDER_LATENCY.labels(verb).observe(time.perf_counter() - started)
        return response

    return endpoint


def _add_health(app: FastAPI, is_ready: Callable[[], bool]) -> None:
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


def create_extender_app(state: ExtenderState, binder: Binder, is_ready: Callable[[], bool]) -> FastAPI:
    """The extender for kube-scheduler: `is_ready` = caches synced AND this replica holds the Lease."""
    app = FastAPI(title="qosgate scheduler extender", docs_url=None, redoc_url=None, openapi_url=None)

    async def filter_(_: Request, body: bytes) -> Response:
        args = decode_args(body)
        if not is_ready():
            EXTENDER_RESULTS.labels("filter", "not_ready").inc()
            return _json(encode_filter_error(args, NOT_READY))
        try:
            result = state.filter(args.pod, args.node_names, args.node_items)
        except Exception:  # a bug: fail this attempt visibly (the scheduler retries), never a 500
            log.exception("filter failed")
            EXTENDER_RESULTS.labels("filter", "error").inc()
            return _json(encode_filter_error(args, "qosgate extender internal error; see its logs"))
        EXTENDER_RESULTS.labels("filter", "fits" if result.passed else "unschedulable").inc()
        return _json(encode_filter_result(args, result.passed, result.failed, result.unresolvable))

    async def prioritize(_: Request, body: bytes) -> Response:
        args = decode_args(body)
        if not is_ready():
            # Prioritize errors are ignored by the scheduler; flat scores say the same without log noise.
            return _json(encode_priorities([(name, 0) for name in args.node_names]))
        try:
            scores = state.prioritize(args.pod, args.node_names, args.node_items)
        except Exception:
            log.exception("prioritize failed")
            EXTENDER_RESULTS.labels("prioritize", "error").inc()
            scores = [(name, 0) for name in args.node_names]
        return _json(encode_priorities(scores))

    async def bind(_: Request, body: bytes) -> Response:
        args = decode_binding(body)
        if not is_ready():
            EXTENDER_RESULTS.labels("bind", "not_ready").inc()
            return _json(encode_binding_result(NOT_READY))
        try:
            error = await run_in_threadpool(state.bind, args.pod_namespace, args.pod_name, args.pod_uid,
                                            args.node, binder)
        except Exception:
            log.exception("bind failed")
            error = "qosgate extender internal error while binding; see its logs"
        EXTENDER_RESULTS.labels("bind", "error" if error else "bound").inc()
        if error:
            log.info("bind refused", extra={"pod": f"{args.pod_namespace}/{args.pod_name}", "node": args.node,
                                            "detail": error})
        return _json(encode_binding_result(error))

    app.add_api_route("/filter", _verb("filter", MAX_ARGS_BYTES, filter_), methods=["POST"])
    app.add_api_route("/prioritize", _verb("prioritize", MAX_ARGS_BYTES, prioritize), methods=["POST"])
    app.add_api_route("/bind", _verb("bind", MAX_BINDING_BYTES, bind), methods=["POST"])
    _add_health(app, is_ready)
    return app


def create_null_extender_app() -> FastAPI:
    """Benchmark baseline: same stack and codec, no decisions — every node passes, scores 0, binds nothing."""
    app = FastAPI(title="null scheduler extender", docs_url=None, redoc_url=None, openapi_url=None)

    async def filter_(_: Request, body: bytes) -> Response:
        args = decode_args(body)
        return _json(encode_filter_result(args, args.node_names, {}, {}))

    async def prioritize(_: Request, body: bytes) -> Response:
        args = decode_args(body)
        return _json(encode_priorities([(name, 0) for name in args.node_names]))

    async def bind(_: Request, body: bytes) -> Response:
        decode_binding(body)
        return _json(encode_binding_result(""))

    app.add_api_route("/filter", _verb("null_filter", MAX_ARGS_BYTES, filter_), methods=["POST"])
    app.add_api_route("/prioritize", _verb("null_prioritize", MAX_ARGS_BYTES, prioritize), methods=["POST"])
    app.add_api_route("/bind", _verb("null_bind", MAX_BINDING_BYTES, bind), methods=["POST"])
    _add_health(app, lambda: True)
    return app
