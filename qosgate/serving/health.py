"""Liveness, readiness and metrics routes: one definition for every process (architecture §3.4).

Served on the plain-HTTP health port (kubelet probes, Prometheus scrapes); the HTTPS listeners answer
``/healthz`` and ``/readyz`` too, but never ``/metrics``: the callers of the HTTPS ports (kube-apiserver,
kube-scheduler) have no use for it, and it names namespaces and nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qosgate.serving.http import Request, Response, Route


@dataclass
class Readiness:
    """Readiness is the conjunction of named checks, plus a drain flag that fails it first on shutdown."""

    checks: dict[str, Callable[[], bool]] = field(default_factory=dict)
    draining: bool = False

    def failing(self) -> list[str]:
        if self.draining:
            return ["shutting down"]
        return [name for name, check in self.checks.items() if not check()]

    def __call__(self) -> bool:
        return not self.failing()


def probe_routes(readiness: Readiness) -> list[Route]:
    def healthz(_request: Request) -> Response:
        return Response.text("ok")

    def readyz(_request: Request) -> Response:
        failing = readiness.failing()
        if failing:
            return Response.text("not ready: " + ", ".join(failing), 503)
        return Response.text("ok")

    return [Route("GET", "/healthz", healthz, content_types=None),
            Route("GET", "/readyz", readyz, content_types=None)]


def metrics_route() -> Route:
    def metrics(_request: Request) -> Response:
        return Response(200, generate_latest(), CONTENT_TYPE_LATEST)

    # Scrapes walk every registered provider (thousands of node samples on a big cluster): off the loop.
    return Route("GET", "/metrics", metrics, content_types=None, offload_above=0)


def health_routes(readiness: Readiness) -> list[Route]:
    return [*probe_routes(readiness), metrics_route()]
