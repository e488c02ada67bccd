"""The admission webhook's routes: decode, call the pure decision, encode (architecture §4.1).

Transport-free: `admit()` takes the body bytes and returns the answer; the serving layer owns sockets, body
limits and content types. Handlers answer with orjson bytes: no models on the hot path.

Where the work runs. Deciding an ordinary review takes tens of microseconds, less than a hop to a worker
thread, so it runs on the event loop. Two kinds of request leave it: a body above `OFFLOAD_ABOVE` (decoding
and deciding a pod with thousands of containers takes milliseconds, and no other request should wait for
it), and a validation the quota engine may decide with API round trips (`Validator.may_block`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from qosgate.core.catalog import CatalogHolder
from qosgate.serving.http import JSON, Blocking, Request, Response, Route
from qosgate.serving.metrics import ADMISSION_LATENCY, ADMISSIONS
from qosgate.webhook.admission import AdmissionRequest, AdmissionResponse, BadReview, decode_review, encode_response
from qosgate.webhook.mutate import mutate
from qosgate.webhook.validate import Validator

log = logging.getLogger("qosgate.webhook")

# etcd stores objects up to 1.5 MiB; a review carries object and oldObject plus envelope.
MAX_BODY_BYTES = 4 * 1024 * 1024
OFFLOAD_ABOVE = 64 * 1024

Decision = Callable[[AdmissionRequest], AdmissionResponse]


@functools.lru_cache(maxsize=256)
def _admission_counter(webhook: str, operation: str, outcome: str, reason: str) -> Any:
    return ADMISSIONS.labels(webhook, operation, outcome, reason)


@functools.lru_cache(maxsize=8)
def _latency_histogram(webhook: str) -> Any:
    return ADMISSION_LATENCY.labels(webhook)


def decode(body: bytes, webhook: str) -> AdmissionRequest | Response:
    """The review, or the 400 that says why the body is not one."""
    try:
        return decode_review(body)
    except BadReview as exc:
        _admission_counter(webhook, "", "malformed", "BadRequest").inc()
        return Response.error(400, str(exc))


def answer(review: AdmissionRequest, decide: Decision, webhook: str, started: float) -> Response:
    """Decide, encode, count and log one review: every failure is a denial, never a 500."""
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
        metadata = (review.object or {}).get("metadata")
        log.log(level, "admission %s", outcome, extra={
            "webhook": webhook, "uid": review.uid, "operation": review.operation, "namespace": review.namespace,
            "pod": review.name or (metadata.get("generateName", "") if isinstance(metadata, dict) else ""),
            "kind": review.kind_name, "user": review.username, "decision": outcome,
            "detail": decision.message, "patchOps": len(decision.patch), "dryRun": review.dry_run,
        })
    return Response(200, body, JSON)


def admit(body: bytes, decide: Decision, webhook: str) -> Response:
    """One admission call, start to end, in the calling thread."""
    started = time.perf_counter()
    review = decode(body, webhook)
    if isinstance(review, Response):
        return review
    return answer(review, decide, webhook, started)


def mutate_route(catalog: CatalogHolder, path: str = "/mutate") -> Route:
    def handle(request: Request) -> Response:
        return admit(request.body, lambda review: mutate(review, catalog.current), "mutate")

    return Route("POST", path, handle, name="mutate", max_body=MAX_BODY_BYTES, offload_above=OFFLOAD_ABOVE)


def validate_route(validator: Validator, path: str = "/validate") -> Route:
    def handle(request: Request) -> Response | Blocking:
        started = time.perf_counter()
        review = decode(request.body, "validate")
        if isinstance(review, Response):
            return review
        if validator.may_block(review):
            # A ledger round trip must not stall the loop, and the engine's group commit needs many
            # requests of a namespace in flight at once: finish in the worker pool.
            return Blocking(lambda: answer(review, validator, "validate", started))
        return answer(review, validator, "validate", started)

    return Route("POST", path, handle, name="validate", max_body=MAX_BODY_BYTES, offload_above=OFFLOAD_ABOVE)


def webhook_routes(catalog: CatalogHolder, validator: Validator | None = None) -> list[Route]:
    routes = [mutate_route(catalog)]
    if validator is not None:
        routes.append(validate_route(validator))
    return routes


def null_webhook_routes() -> list[Route]:
    """Benchmark baseline: the same serving path and codec, no decision — decode, allow, encode."""

    def handle(request: Request) -> Response:
        return admit(request.body, lambda _review: AdmissionResponse.allow(), "null")

    return [Route("POST", "/mutate", handle, name="null", max_body=MAX_BODY_BYTES, offload_above=OFFLOAD_ABOVE)]
