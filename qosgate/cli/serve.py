"""`qosgate serve webhook|extender|all`: build each component's configuration once, then serve.

Modes:
- cluster (default): watch caches, the catalog ConfigMap, quota ledgers and Lease leader election against
  the API server found through `--kubeconfig`, the in-cluster service account or ~/.kube/config.
- `--local`: no cluster. The webhook mutates and validates with the catalog alone (no quotas); the
  extender starts with empty caches and learns nodes from the `Nodes` form of the calls it receives.

Shutdown (SIGTERM): readiness fails first, then after `--shutdown-delay` (time for endpoints to drop the
pod) the server stops accepting and drains in-flight requests, bounded by `--graceful-timeout`
(qosgate.serving.lifecycle).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qosgate.cli.argtypes import port, positive_seconds, seconds
from qosgate.core.annotations import CATALOG_CONFIGMAP, SYSTEM_NAMESPACE
from qosgate.core.errors import QosgateError
from qosgate.core.nodefit import STRATEGIES
from qosgate.extender.wiring import ExtenderConfig, LeaderElection, PeerAccess
from qosgate.kube.catalog import CatalogSource
from qosgate.serving.health import health_routes, probe_routes
from qosgate.serving.http import Router
from qosgate.serving.http2 import H2_ALPN
from qosgate.serving.lifecycle import Lifecycle, run
from qosgate.serving.logs import configure_logging
from qosgate.serving.metrics import STATE, Sample
from qosgate.serving.server import Limits, Listener, Server
from qosgate.serving.tls import (
    ALPN_PROTOCOLS,
    CA_CERT_FILE,
    CLIENT_CERT_FILE,
    CLIENT_KEY_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    CertificateLoadError,
    CertReloader,
)
from qosgate.webhook.wiring import WebhookConfig

if TYPE_CHECKING:
    from qosgate.kube.transport import KubeClient

log = logging.getLogger("qosgate.cli.serve")

WEBHOOK_SERVICE = "qosgate-webhook"
EXTENDER_SERVICE = "qosgate-extender"
DEFAULT_CERT_DIR = ".qosgate/certs"
DEFAULT_PORTS = {"webhook": 8443, "extender": 8444}
COMPONENTS = ("webhook", "extender", "all")
_DEFAULT_LIMITS = Limits()


def _names(value: str) -> frozenset[str]:
    return frozenset(v.strip() for v in value.split(",") if v.strip())






def add_serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    serve = subparsers.add_parser("serve", help="run the admission webhook and/or the scheduler extender over HTTPS",
                                  description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("component", choices=COMPONENTS)
    serve.add_argument("--cert-dir", default=DEFAULT_CERT_DIR,
                       help="directory with ca.crt, tls.crt, tls.key; generated there on first run when absent "
                            f"(default {DEFAULT_CERT_DIR})")
    serve.add_argument("--no-generate-certs", action="store_true",
                       help="fail instead of generating certificates when the cert dir is empty (production)")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1 with --local, else 0.0.0.0)")
    serve.add_argument("--port", type=port, default=None,
                       help="HTTPS port of the component served (webhook 8443, extender 8444); "
                            "with `all`, the webhook's")
    serve.add_argument("--extender-port", type=port, default=None,
                       help="extender HTTPS port with `all` (default 8444)")
    serve.add_argument("--health-port", type=port, default=9440,
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
    serve.add_argument("--reservation-ttl", type=positive_seconds, default=30.0,
                       help="seconds a quota or node reservation waits for its pod to appear (default 30)")
    serve.add_argument("--strategy", choices=STRATEGIES, default="spread",
                       help="extender prioritize strategy (default spread)")
    serve.add_argument("--leader-elect", action="store_true",
                       help="extender: only the Lease holder decides; with an advertised address (POD_IP or "
                            "--extender-advertise-url) followers stay ready and forward the verbs to it")
    serve.add_argument("--lease-namespace", default=SYSTEM_NAMESPACE)
    serve.add_argument("--lease-name", default="qosgate-extender")
    serve.add_argument("--lease-duration", type=positive_seconds, default=5.0,
                       help="seconds a crashed leader's Lease blocks a successor (default 5; a graceful stop "
                            "releases it at once)")
    serve.add_argument("--extender-advertise-url", metavar="URL",
                       help="this replica's extender URL as the other replicas reach it (default "
                            "https://$POD_IP:<extender port> when POD_IP is set); with leader election, followers "
                            "forward the verbs to the leader's URL and every replica with synced caches is ready")
    serve.add_argument("--extender-peer-name", default=f"{EXTENDER_SERVICE}.{SYSTEM_NAMESPACE}.svc",
                       help="name to verify in the leader's serving certificate when forwarding (default the "
                            "Service's DNS name)")
    serve.add_argument("--extender-client-ca", metavar="FILE",
                       help="CA whose client certificates may call the extender's verbs (kube-scheduler's "
                            "tlsConfig.certFile); default: ca.crt of --cert-dir")
    serve.add_argument("--extender-allow-unauthenticated", action="store_true",
                       help="UNSAFE: serve /filter, /prioritize, /bind and /preempt to callers without a client "
                            "certificate (anyone reaching the port can then bind pods to nodes)")
    serve.add_argument("--max-connections", type=int, default=_DEFAULT_LIMITS.max_connections,
                       help=f"open client connections per process (default {_DEFAULT_LIMITS.max_connections})")
    serve.add_argument("--keepalive-timeout", type=positive_seconds, default=_DEFAULT_LIMITS.keepalive_timeout,
                       help="seconds an idle keep-alive connection stays open (default 120, above Go's 90)")
    serve.add_argument("--shutdown-delay", type=seconds, default=5.0,
                       help="seconds between failing readiness and closing listeners on SIGTERM (default 5)")
    serve.add_argument("--graceful-timeout", type=positive_seconds, default=20.0,
                       help="seconds to drain in-flight requests before forcing shutdown (default 20)")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--log-format", default="json", choices=("json", "text"))
    serve.set_defaults(func=run_serve)
    return serve


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """The process: which components, where they listen, TLS, limits, shutdown. Built once from the flags."""

    components: tuple[str, ...]
    host: str
    ports: dict[str, int]
    health_port: int
    cert_dir: Path
    generate_certs: bool
    local: bool
    kubeconfig: str | None
    limits: Limits
    shutdown_delay: float
    graceful_timeout: float
    extender_client_ca: Path | None
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    extender: ExtenderConfig = field(default_factory=ExtenderConfig)


def _ports(args: argparse.Namespace) -> dict[str, int]:
    if args.component == "webhook":
        if args.extender_port is not None:
            raise QosgateError("--extender-port applies to `serve extender` and `serve all`; use --port")
        return {"webhook": args.port if args.port is not None else DEFAULT_PORTS["webhook"]}
    if args.component == "extender":
        if args.port is not None and args.extender_port is not None and args.port != args.extender_port:
            raise QosgateError("--port and --extender-port name two different ports for the extender; give one")
        chosen = args.port if args.port is not None else args.extender_port
        return {"extender": chosen if chosen is not None else DEFAULT_PORTS["extender"]}
    ports = {"webhook": args.port if args.port is not None else DEFAULT_PORTS["webhook"],
             "extender": args.extender_port if args.extender_port is not None else DEFAULT_PORTS["extender"]}
    if ports["webhook"] == ports["extender"] != 0:
        raise QosgateError(f"webhook and extender cannot share port {ports['webhook']}")
    return ports


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    components = ("webhook", "extender") if args.component == "all" else (args.component,)
    cert_dir = Path(args.cert_dir)
    catalog = CatalogSource.of(args.catalog, args.catalog_configmap)
    if args.max_connections < 1:
        raise QosgateError("--max-connections must be at least 1")
    authenticated = not args.extender_allow_unauthenticated
    election = None
    ports = _ports(args)
    peers = None
    if args.leader_elect:
        duration = args.lease_duration
        election = LeaderElection(args.lease_namespace, args.lease_name,
                                  os.environ.get("POD_NAME") or socket.gethostname(), lease_duration=duration,
                                  renew_deadline=duration * 0.7, retry_period=min(1.0, duration / 5))
        advertise = args.extender_advertise_url
        if advertise is None and os.environ.get("POD_IP") and "extender" in ports:
            host = os.environ["POD_IP"]
            advertise = f"https://{f'[{host}]' if ':' in host else host}:{ports['extender']}"
        if advertise:
            peers = PeerAccess(advertise, str(cert_dir / CA_CERT_FILE), args.extender_peer_name,
                               str(cert_dir / CLIENT_CERT_FILE), str(cert_dir / CLIENT_KEY_FILE))
    return ServeConfig(
        components=components,
        host=args.host or ("127.0.0.1" if args.local else "0.0.0.0"),
        ports=ports,
        health_port=args.health_port,
        cert_dir=cert_dir,
        generate_certs=not args.no_generate_certs,
        local=args.local,
        kubeconfig=args.kubeconfig,
        limits=Limits(max_connections=args.max_connections, keepalive_timeout=args.keepalive_timeout),
        shutdown_delay=args.shutdown_delay,
        graceful_timeout=args.graceful_timeout,
        extender_client_ca=(Path(args.extender_client_ca) if args.extender_client_ca else cert_dir / CA_CERT_FILE)
        if authenticated else None,
        webhook=WebhookConfig(catalog=catalog, admin_users=_names(args.admin_users),
                              admin_groups=_names(args.admin_groups), reservation_ttl=args.reservation_ttl),
        extender=ExtenderConfig(catalog=catalog, strategy=args.strategy, reservation_ttl=args.reservation_ttl,
                                leader_election=election, peers=peers, client_certificate_required=authenticated),
    )


def ensure_certs(config: ServeConfig) -> None:
    from qosgate.certs.generate import ensure_certificates, ensure_client_certificate, service_dns_names

    present = all((config.cert_dir / f).exists() for f in (CA_CERT_FILE, TLS_CERT_FILE, TLS_KEY_FILE))
    if not config.generate_certs:
        if not present:
            raise QosgateError(f"--cert-dir {config.cert_dir}: ca.crt, tls.crt and tls.key are required "
                               "(--no-generate-certs is set)")
        return
    if present and not config.local:
        return  # in a cluster the certificates belong to cert-manager or `qosgate certs`; never rewrite them
    # One certificate serves both services so a local run of `all` verifies under either name.
    try:
        result = ensure_certificates(config.cert_dir, WEBHOOK_SERVICE, SYSTEM_NAMESPACE,
                                     extra_sans=service_dns_names(EXTENDER_SERVICE, SYSTEM_NAMESPACE))
        # A local run also gets the client pair the extender's verbs require (what kube-scheduler presents).
        ensure_client_certificate(config.cert_dir)
    except (OSError, ValueError) as exc:
        raise QosgateError(f"cannot prepare certificates in {config.cert_dir}: {exc}") from None
    log.info("certificates %s in %s", result.action, config.cert_dir)


def _reloader(config: ServeConfig, client_ca: Path | None, alpn: Sequence[str] = ALPN_PROTOCOLS) -> CertReloader:
    if client_ca is not None and not client_ca.is_file():
        raise QosgateError(f"extender client CA {client_ca} does not exist: give --extender-client-ca, or "
                           "--extender-allow-unauthenticated (unsafe)")
    try:
        return CertReloader(config.cert_dir / TLS_CERT_FILE, config.cert_dir / TLS_KEY_FILE,
                            client_ca_file=client_ca, alpn=alpn)
    except CertificateLoadError as exc:
        raise QosgateError(f"--cert-dir {config.cert_dir}: {exc}") from None


def api_client(config: ServeConfig) -> KubeClient | None:
    """The API server to work against (None with --local); a missing configuration fails before anything starts."""
    if config.local:
        return None
    from qosgate.kube.config import load_api_client

    return load_api_client(config.kubeconfig)


def certificate_samples(tls: CertReloader, listener: str) -> Callable[[], Iterable[Sample]]:
    def provider() -> Iterable[Sample]:
        yield ("qosgate_certificate_expiry_timestamp_seconds", "notAfter of the serving certificate in use.",
               {"listener": listener}, tls.not_after.timestamp())

    return provider


def build_server(config: ServeConfig, lifecycle: Lifecycle, api: KubeClient | None) -> Server:
    """Every listener of the process: one HTTPS port per component plus the plain health port."""
    listeners: list[Listener] = []
    if "webhook" in config.components:
        from qosgate.webhook.wiring import build_webhook

        routes = build_webhook(config.webhook, lifecycle, api)
        listeners.append(Listener("webhook", Router([*routes, *probe_routes(lifecycle.readiness)], "webhook"),
                                  config.ports["webhook"], config.host, _reloader(config, None)))
    if "extender" in config.components:
        from qosgate.extender.wiring import build_extender

        routes = build_extender(config.extender, lifecycle, api)
        listeners.append(Listener("extender", Router([*routes, *probe_routes(lifecycle.readiness)], "extender"),
                                  config.ports["extender"], config.host,
                                  # HTTP/2: kube-scheduler then multiplexes its calls on one connection
                                  # instead of a TLS handshake for many of them (serving/http2.py).
                                  _reloader(config, config.extender_client_ca, H2_ALPN)))
    for listener in listeners:
        tls = listener.tls
        assert isinstance(tls, CertReloader)
        lifecycle.readiness.checks[f"{listener.name} certificate"] = tls.is_valid
        STATE.register(f"certificate-{listener.name}", certificate_samples(tls, listener.name))
    if config.health_port:
        listeners.append(Listener("health", Router(health_routes(lifecycle.readiness), "health"),
                                  config.health_port, config.host))
    server = Server(listeners, config.limits)
    try:
        server.bind()
    except OSError as exc:
        raise QosgateError(f"cannot listen on {config.host} ports "
                           f"{', '.join(str(listener.port) for listener in listeners)}: {exc.strerror}") from None
    return server


def run_serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    config = config_from_args(args)
    api = api_client(config)
    ensure_certs(config)
    lifecycle = Lifecycle()
    try:
        server = build_server(config, lifecycle, api)
    except BaseException:
        lifecycle.stop()
        raise
    run(server, lifecycle, shutdown_delay=config.shutdown_delay, graceful_timeout=config.graceful_timeout)
    return 0
