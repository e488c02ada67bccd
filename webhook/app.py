"""The admission webhook HTTP shell: read the body, decode, call the pure decision, encode.

Handlers take the raw request and answer with orjson bytes: no pydantic models on the hot path.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qosgate.core.catalog import CatalogHolder
from qosgate.serving.metrics import ADMISSION_LATENCY, ADMISSIONS
from qosgate.webhook.admission import AdmissionRequest, AdmissionResponse, BadReview, decode_review, encode_response
from qosgate.webhook.mutate import mutate

log = logging.getLogger("qosgate.webhook")

# etcd stores objects up to 1.5 MiB; a review carries object and oldObject plus envelope.
MAX_BODY_BYTES = 4 * 1024 * 1024
JSON = "application/json"

Decision = Callable[[AdmissionRequest], AdmissionResponse]


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise BodyTooLarge
        return await request.body()  # the server never delivers more than the declared length
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def error_response(status: int, message: str) -> Response:
    return Response(orjson.dumps({"message": message}), status_code=status, media_type=JSON)


@functools.lru_cache(maxsize=256)
def _admission_counter(webhook: str, operation: str, outcome: str, reason: str) -> Any:
    return ADMISSIONS.labels(webhook, operation, outcome, reason)


@functools.lru_cache(maxsize=8)
def _latency_histogram(webhook: str) -> Any:
    return ADMISSION_LATENCY.labels(webhook)


async def admit(request: Request, decide: Decision, webhook: str) -> Response:
    """Shared shell of /mutate and /validate: every failure is a 4xx or a denial, never a 500."""
    started = time.perf_counter()
    content_type = request.headers.get("content-type", "")
    if content_type and not content_type.startswith("application/json"):
        return error_response(415, f"content type must be application/json, got {content_type!r}")
    try:
        body = await read_body(request)
    except BodyTooLarge:
        return error_response(413, f"AdmissionReview larger than {MAX_BODY_BYTES} bytes")
    try:
        review = decode_review(body)
    except BadReview as exc:
        ADMISSIONS.labels(webhook, "", "malformed", "BadRequest").inc()
        return error_response(400, str(exc))
    try:
        decision = decide(review)
    except Exception:  # a bug must not turn into a 500 the apiserver retries blindly; deny and log it
        log.exception("admission failed", extra={"uid": review.uid, "namespace": review.namespace})
        decision = AdmissionResponse.deny(f"qosgate internal error handling request {review.uid}; "
                                          "see the webhook logs", code=500, reason="InternalError")
    body = encode_response(review.uid, decision)
    outcome = "allowed" if decision.allowed else "denied"
    _admission_counter(webhook, review.operation, outcome, decision.reason).inc()
    _latency_histogram(webhook).observe(time.perf_counter() - started)
    # Denials are what operators look for; every mutation at info would cost the hot path a log line each.
    level = logging.INFO if not decision.allowed else logging.DEBUG
    if (not decision.allowed or decision.patch or decision.warnings) and log.isEnabledFor(level):
        log.log(level, "admission %s", outcome, extra={
            "webhook": webhook, "uid": review.uid, "operation": review.operation, "namespace": review.namespace,
            "pod": review.name or (review.object or {}).get("metadata", {}).get("generateName", ""),
            "kind": review.kind_name, "user": review.username, "decision": outcome,
            "detail": decision.message, "patchOps": len(decision.patch), "dryRun": review.dry_run,
        })
    return Response(body, media_type=JSON)


def create_webhook_app(catalog: CatalogHolder, validate: Decision | None = None,
                       is_ready: Callable[[], bool] = lambda: True) -> FastAPI:
    app = FastAPI(title="qosgate webhook", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/mutate")
    async def mutate_endpoint(request: Request) -> Response:
        return await admit(request, lambda review: mutate(review, catalog.current), "mutate")

    if validate is not None:
        @app.post("/validate")
        async def validate_endpoint(request: Request) -> Response:
            return await admit(request, validate, "validate")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz")
    async def readyz() -> Response:
        if is_ready():
            return Response("ok", media_type="text/plain")
        return Response("not ready", status_code=503, media_type="text/plain")

    return app
