"""The scheduler extender's routes: /filter, /prioritize, /bind (architecture §4.2, wire facts §7.1).

Thin on purpose: decode (qosgate.extender.codec), decide (qosgate.extender.state), encode. Malformed
requests get a 400 with the reason; nothing a client sends produces a 500. Decisions a replica must not
take — it is not the Lease leader, or its caches are not synced — come back in the wire's own `Error`
field, which kube-scheduler reports and retries the pod on.

Where the work runs. filter and prioritize are pure CPU under one lock and take well under a millisecond
for the `NodeNames` form kube-scheduler sends with `nodeCacheCapable: true`: a thread hop would only add
latency, so they run on the event loop. A body above `OFFLOAD_ABOVE` (the `Nodes` form: every Node object,
~20 KiB each) is decoded and decided in the worker pool, one at a time (`_LARGE_BODIES`), so a huge request
neither stalls the loop nor multiplies the memory a decode takes. bind waits for the API's answer: always in
the pool, so many binds can be in flight for the scheduler's asynchronous binding.

Authentication. The verbs can bind any pending pod to any node, so with a client CA configured they
require a TLS client certificate signed by it (kube-scheduler's `tlsConfig.certFile/keyFile`); health
and metrics stay on the health port. The identity in the certificate is not otherwise checked: any holder
of a certificate from that CA is a scheduler (architecture §6.2).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from qosgate.extender.codec import (
    WireError,
    decode_args,
    decode_binding,
    decode_preemption,
    encode_binding_result,
    encode_filter_error,
    encode_filter_result,
    encode_preemption,
    encode_priorities,
)
from qosgate.extender.forward import LeaderForwarder
from qosgate.extender.state import Binder, ExtenderState
from qosgate.serving.http import JSON, Blocking, Request, Response, Route
from qosgate.serving.metrics import EXTENDER_LATENCY, EXTENDER_RESULTS

log = logging.getLogger("qosgate.extender")

# The `Nodes` form of a 5,000-node cluster carries every Node object: ~100 MiB with image lists. Larger is
# refused (413); run kube-scheduler with nodeCacheCapable: true (the shipped configuration) and the calls
# carry names only.
MAX_ARGS_BYTES = 128 * 1024 * 1024
MAX_BINDING_BYTES = 64 * 1024
OFFLOAD_ABOVE = 256 * 1024
NOT_READY = ("this qosgate extender replica is not serving: it is not the leader or its caches are not "
             "synced yet; the scheduler will retry")

_LARGE_BODIES = threading.BoundedSemaphore(1)


@functools.cache
def _result(verb: str, outcome: str) -> Any:
    """The labelled counter child, resolved once per (verb, outcome)."""
    return EXTENDER_RESULTS.labels(verb, outcome)


@functools.cache
def _latency(verb: str) -> Any:
    return EXTENDER_LATENCY.labels(verb)


def _verb(verb: str, decide: Callable[[bytes], bytes]) -> Callable[[bytes], Response]:
    """Shared shell of every verb: wire errors are 400s, the body's size decides where it is decoded."""

    def handle(body: bytes) -> Response:
        started = time.perf_counter()
        try:
            if len(body) > OFFLOAD_ABOVE:
                with _LARGE_BODIES:
                    payload = decide(body)
            else:
                payload = decide(body)
        except WireError as exc:
            _result(verb, "malformed").inc()
            return Response(400, encode_binding_result(str(exc)), JSON)
        except Exception as exc:  # a decoder bug on hostile input: still the client's request that failed
            log.exception("%s: unexpected failure", verb)
            _result(verb, "error").inc()
            return Response(400, encode_binding_result(f"cannot process this {verb} request "
                                                       f"({type(exc).__name__})"), JSON)
        _latency(verb).observe(time.perf_counter() - started)
        return Response(200, payload, JSON)

    return handle


def _refusal(status: int, message: str) -> Response:
    """Refusals in the wire's own shape: kube-scheduler reports the `Error` field."""
    return Response(status, encode_binding_result(message), JSON)


# How each verb says "not now" in its own wire shape when the leader cannot be reached.
_REFUSALS: dict[str, Callable[[str], bytes]] = {
    "filter": lambda message: encode_filter_error(None, message),
    # No node is a valid answer: the scheduler tries no preemption now and retries the pod later.
    "preempt": lambda _message: encode_preemption({}),
    "prioritize": lambda _message: encode_priorities([]),  # prioritize errors are ignored: no scores
    "bind": encode_binding_result,
}


def _routes(prefix: str, filter_: Callable[[bytes], bytes], prioritize: Callable[[bytes], bytes],
            bind: Callable[[bytes], bytes], client_certificate_required: bool,
            forwarder: LeaderForwarder | None = None, preempt: Callable[[bytes], bytes] | None = None
            ) -> list[Route]:
    common: dict[str, Any] = {"client_certificate_required": client_certificate_required, "refusal": _refusal}
    routes = []
    verbs = [("filter", filter_, MAX_ARGS_BYTES), ("prioritize", prioritize, MAX_ARGS_BYTES),
             ("bind", bind, MAX_BINDING_BYTES)]
    if preempt is not None:
        verbs.append(("preempt", preempt, MAX_ARGS_BYTES))
    for verb, decide, max_body in verbs:
        local = _verb(f"{prefix}{verb}", decide)

        def handle(request: Request, verb: str = verb, local: Callable[[bytes], Response] = local
                   ) -> Response | Blocking:
            if forwarder is not None and forwarder.leader_url():
                # A follower: the leader decides; relaying waits on the network, so off the event loop.
                body = request.body
                return Blocking(lambda: forwarder.forward(verb, body, _REFUSALS[verb]))
            if verb == "bind":
                body = request.body
                return Blocking(lambda: local(body))  # waits for the API's answer to the binding POST
            return local(request.body)

        routes.append(Route("POST", f"/{verb}", handle, name=verb, max_body=max_body,
                            offload_above=None if verb == "bind" else OFFLOAD_ABOVE, **common))
    return routes


def extender_routes(state: ExtenderState, binder: Binder, is_ready: Callable[[], bool],
                    client_certificate_required: bool = False,
                    forwarder: LeaderForwarder | None = None) -> list[Route]:
    """The extender for kube-scheduler: `is_ready` = caches synced AND this replica holds the Lease (and caught
    up since winning it). With a `forwarder`, a follower relays the verbs to the leader instead of refusing."""

    def filter_(body: bytes) -> bytes:
        args = decode_args(body)
        if not is_ready():
            _result("filter", "not_ready").inc()
            return encode_filter_error(args, NOT_READY)
        try:
            result = state.filter(args.pod, args.node_names, args.node_items)
        except Exception:  # a bug: fail this attempt visibly (the scheduler retries), never a 500
            log.exception("filter failed")
            _result("filter", "error").inc()
            return encode_filter_error(args, "qosgate extender internal error; see its logs")
        _result("filter", "fits" if result.passed else "unschedulable").inc()
        return encode_filter_result(args, result.passed, result.failed, result.unresolvable)

    def prioritize(body: bytes) -> bytes:
        args = decode_args(body)
        if not is_ready():
            # Prioritize errors are ignored by the scheduler; flat scores say the same without log noise.
            _result("prioritize", "not_ready").inc()
            return encode_priorities([(name, 0) for name in args.node_names])
        try:
            scores = state.prioritize(args.pod, args.node_names, args.node_items)
        except Exception:
            log.exception("prioritize failed")
            _result("prioritize", "error").inc()
            scores = [(name, 0) for name in args.node_names]
        else:
            _result("prioritize", "scored").inc()  # the error-ratio alert needs the successes too
        return encode_priorities(scores)

    def bind(body: bytes) -> bytes:
        args = decode_binding(body)
        if not is_ready():
            _result("bind", "not_ready").inc()
            return encode_binding_result(NOT_READY)
        try:
            error = state.bind(args.pod_namespace, args.pod_name, args.pod_uid, args.node, binder)
        except Exception:
            log.exception("bind failed")
            error = "qosgate extender internal error while binding; see its logs"
        _result("bind", "error" if error else "bound").inc()
        if error:
            log.info("bind refused", extra={"pod": f"{args.pod_namespace}/{args.pod_name}", "node": args.node,
                                            "detail": error})
        return encode_binding_result(error)

    def preempt(body: bytes) -> bytes:
        args = decode_preemption(body)
        if not is_ready():
            _result("preempt", "not_ready").inc()
            return encode_preemption({})
        try:
            kept = state.preempt(args.pod, args.victims)
        except Exception:
            log.exception("preempt failed")
            _result("preempt", "error").inc()
            kept = {}
        _result("preempt", "candidates" if kept else "none").inc()
        return encode_preemption(kept)

    return _routes("", filter_, prioritize, bind, client_certificate_required, forwarder, preempt)


def null_extender_routes(client_certificate_required: bool = False) -> list[Route]:
    """Benchmark baseline: same serving path and codec, no decisions — every node passes, scores 0."""

    def filter_(body: bytes) -> bytes:
        args = decode_args(body)
        return encode_filter_result(args, args.node_names, {}, {})

    def prioritize(body: bytes) -> bytes:
        args = decode_args(body)
        return encode_priorities([(name, 0) for name in args.node_names])

    def bind(body: bytes) -> bytes:
        decode_binding(body)
        return encode_binding_result("")

    return _routes("null_", filter_, prioritize, bind, client_certificate_required)
