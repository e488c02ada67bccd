"""`qosgate serve webhook|extender|all`: wire the pure core, the caches and the HTTPS servers together.

Modes:
- cluster (default when a kubeconfig or in-cluster service account is found): watch caches, the catalog
  ConfigMap, quota ledgers and Lease leader election against the API server.
- `--local`: no cluster. The webhook mutates and validates with the catalog alone (no quotas); the
  extender starts with empty caches and learns nodes from the `Nodes` form of the calls it receives.

Shutdown (SIGTERM): readiness fails first, then after `--shutdown-delay` (time for endpoints to drop the
pod) the servers stop accepting and drain in-flight requests, bounded by `--graceful-timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qosgate.core.annotations import CATALOG_CONFIGMAP, SYSTEM_NAMESPACE
from qosgate.core.errors import QosgateError
from qosgate.serving.logs import configure_logging
from qosgate.serving.metrics import STATE

log = logging.getLogger("qosgate.cli.serve")

WEBHOOK_SERVICE = "qosgate-webhook"
EXTENDER_SERVICE = "qosgate-extender"
DEFAULT_CERT_DIR = ".qosgate/certs"


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


def health_app(readiness: Readiness) -> FastAPI:
    app = FastAPI(title="qosgate health", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        failing = readiness.failing()
        if failing:
            return Response("not ready: " + ", ".join(failing), status_code=503, media_type="text/plain")
        return Response("ok", media_type="text/plain")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    serve = subparsers.add_parser("serve", help="run the admission webhook and/or the scheduler extender over HTTPS")
    serve.add_argument("component", choices=("webhook", "extender", "all"))
    serve.add_argument("--cert-dir", default=DEFAULT_CERT_DIR,
                       help="directory with ca.crt, tls.crt, tls.key; generated there on first run when absent "
                            f"(default {DEFAULT_CERT_DIR})")
    serve.add_argument("--no-generate-certs", action="store_true",
                       help="fail instead of generating certificates when the cert dir is empty (production)")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1 with --local, else 0.0.0.0)")
    serve.add_argument("--port", type=int, default=8443, help="webhook HTTPS port (default 8443)")
    serve.add_argument("--extender-port", type=int, default=8444, help="extender HTTPS port (default 8444)")
    serve.add_argument("--health-port", type=int, default=9440,
                       help="plain-HTTP port for /healthz, /readyz, /metrics (0 disables; default 9440)")
    serve.add_argument("--local", action="store_true", help="run without a cluster (see `qosgate serve --help`)")
    serve.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account, then ~/.kube)")
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--catalog", metavar="FILE", help="class catalog YAML file (default: built-in catalog)")
    source.add_argument("--catalog-configmap", metavar="NS/NAME",
                        help=f"watch the catalog ConfigMap (cluster default {SYSTEM_NAMESPACE}/{CATALOG_CONFIGMAP})")
    serve.add_argument("--admin-users", default="", help="comma-separated users allowed to edit quotas and catalog")
    serve.add_argument("--admin-groups", default="system:masters",
                       help="comma-separated groups allowed to edit quotas and catalog (default system:masters)")
    serve.add_argument("--reservation-ttl", type=float, default=30.0,
                       help="seconds a quota or node reservation waits for its pod to appear (default 30)")
    serve.add_argument("--strategy", choices=("spread", "binpack"), default="spread",
                       help="extender prioritize strategy (default spread)")
    serve.add_argument("--leader-elect", action="store_true", help="extender: serve only while holding the Lease")
    serve.add_argument("--lease-namespace", default=SYSTEM_NAMESPACE)
    serve.add_argument("--lease-name", default="qosgate-extender")
    serve.add_argument("--shutdown-delay", type=float, default=5.0,
                       help="seconds between failing readiness and closing listeners on SIGTERM (default 5)")
    serve.add_argument("--graceful-timeout", type=float, default=20.0,
                       help="seconds to drain in-flight requests before forcing shutdown (default 20)")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--log-format", default="json", choices=("json", "text"))
    serve.set_defaults(func=run_serve)
    return serve


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _ensure_certs(args: argparse.Namespace) -> None:
    from qosgate.certs.generate import CA_CERT_FILE, TLS_CERT_FILE, TLS_KEY_FILE, ensure_certificates, service_dns_names

    present = all(os.path.exists(os.path.join(args.cert_dir, f)) for f in (CA_CERT_FILE, TLS_CERT_FILE, TLS_KEY_FILE))
    if args.no_generate_certs:
        if not present:
            raise QosgateError(f"--cert-dir {args.cert_dir}: ca.crt, tls.crt and tls.key are required "
                               "(--no-generate-certs is set)")
        return
    if present and not args.local:
        return  # in a cluster the certificates belong to cert-manager or `qosgate certs`; never rewrite them
    # One certificate serves both services so a local run of `all` verifies under either name.
    result = ensure_certificates(args.cert_dir, WEBHOOK_SERVICE, SYSTEM_NAMESPACE,
                                 extra_sans=service_dns_names(EXTENDER_SERVICE, SYSTEM_NAMESPACE))
    log.info("certificates %s in %s", result.action, args.cert_dir)


class Runtime:
    """Everything `serve` started, so it can be stopped in reverse order."""

    def __init__(self) -> None:
        self.readiness = Readiness()
        self.apps: list[tuple[Any, int]] = []
        self.stoppers: list[Callable[[], None]] = []

    def stop(self) -> None:
        for stop in reversed(self.stoppers):
            with contextlib.suppress(Exception):
                stop()


def _api_client(args: argparse.Namespace) -> Any:
    from qosgate.kube.config import load_api_client

    return load_api_client(args.kubeconfig)


def build_webhook(args: argparse.Namespace, runtime: Runtime, api: Any | None) -> FastAPI:
    from qosgate.webhook.wiring import build_webhook_app

    return build_webhook_app(args, runtime, api)


def build_extender(args: argparse.Namespace, runtime: Runtime, api: Any | None) -> FastAPI:
    from qosgate.extender.wiring import build_extender_app

    return build_extender_app(args, runtime, api)


class _QuietServer(uvicorn.Server):
    """uvicorn installs its own SIGTERM handler in capture_signals(); `serve` owns the signals instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(args: argparse.Namespace, runtime: Runtime, host: str) -> None:
    from qosgate.serving.tls import TLSServer

    tls = TLSServer(runtime.apps, args.cert_dir, host=host, graceful_timeout=args.graceful_timeout,
                    configure_logging=False, access_log=False)
    runtime.readiness.checks["certificate"] = tls.reloader.is_valid
    STATE.register("certificate", lambda: [(
        "qosgate_certificate_expiry_timestamp_seconds", "notAfter of the serving certificate in use.", {},
        tls.reloader.not_after.timestamp())])
    servers: list[asyncio.Task[Any]] = [asyncio.create_task(tls.serve(install_signal_handlers=False))]
    health: uvicorn.Server | None = None
    if args.health_port:
        health = _QuietServer(uvicorn.Config(health_app(runtime.readiness), host=host, port=args.health_port,
                                             log_config=None, access_log=False, server_header=False))
        sock = socket.create_server((host, args.health_port), reuse_port=False)
        servers.append(asyncio.create_task(health.serve(sockets=[sock])))

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    waiter = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait([waiter, *servers], return_when=asyncio.FIRST_COMPLETED)
    if waiter in done:
        log.info("shutdown requested: failing readiness, draining for %.1fs", args.shutdown_delay)
        runtime.readiness.draining = True
        await asyncio.sleep(args.shutdown_delay)
    tls.request_shutdown()
    if health is not None:
        health.should_exit = True
    waiter.cancel()
    results = await asyncio.gather(*servers, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


def run_serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    host = args.host or ("127.0.0.1" if args.local else "0.0.0.0")
    _ensure_certs(args)
    runtime = Runtime()
    api = None if args.local else _api_client(args)
    try:
        if args.component in ("webhook", "all"):
            runtime.apps.append((build_webhook(args, runtime, api), args.port))
        if args.component in ("extender", "all"):
            runtime.apps.append((build_extender(args, runtime, api), args.extender_port))
        asyncio.run(_serve(args, runtime, host))
    finally:
        runtime.stop()
    return 0
