"""`qosgate agent`: the node agent (a DaemonSet) — every kubepods ancestor's memory.min covers its children,
and the node's protection truth is published for the extender (agent/README.md).

Modes:
- cluster (default): watch the pods bound to --node-name, read the Node, publish the report Lease
  qosgate-system/qosgate-node-<node>, serve /healthz, /readyz, /metrics on --health-port.
- --local: no cluster — the cgroup pass only, nothing published.
- --once (or --passes N): run one (N) pass(es), print a JSON summary on stdout, exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qosgate.cli.argtypes import port, positive_seconds, quantity
from qosgate.core.errors import InvalidError, QosgateError
from qosgate.core.nodeoffer import parse_node_offer
from qosgate.core.nodereport import encode
from qosgate.kube.catalog import CatalogSource

if TYPE_CHECKING:
    from qosgate.kube.transport import KubeClient

POLICY_CHOICES = ("observed", "none", "legacy", "tiered")


def add_agent_parser(subparsers: Any) -> argparse.ArgumentParser:
    agent: argparse.ArgumentParser = subparsers.add_parser(
        "agent", help="run the node agent (cgroup ancestors + node report)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    agent.add_argument("--node-name", default=os.environ.get("NODE_NAME"),
                       help="this node's name (default: $NODE_NAME, set through the downward API)")
    agent.add_argument("--cgroup-root", default="/sys/fs/cgroup", help="where the host's cgroup2 is mounted")
    agent.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account, then ~/.kube)")
    agent.add_argument("--local", action="store_true", help="no cluster: the cgroup pass only, nothing published")
    agent.add_argument("--once", action="store_true", help="one pass, print a JSON summary, exit 0")
    agent.add_argument("--passes", type=int, default=None, metavar="N",
                       help="run N passes back to back, print the summary of the last, exit 0 (benchmarks)")
    agent.add_argument("--interval", type=positive_seconds, default=10.0, help="seconds between passes (default 10)")
    agent.add_argument("--report-interval", type=positive_seconds, default=30.0,
                       help="heartbeat of the report Lease; it is written sooner only when the report changed "
                            "materially; staleness bound = 3x (default 30)")
    agent.add_argument("--health-port", type=port, default=9442,
                       help="plain-HTTP port for /healthz, /readyz, /metrics (0 disables; default 9442)")
    agent.add_argument("--host", default="0.0.0.0", help="listen address of the health port")
    agent.add_argument("--state-file", default="/var/lib/qosgate-agent/state.json",
                       help="where the agent remembers the values it raised (hostPath; '' keeps them in memory)")
    agent.add_argument("--protectable-bytes", type=quantity, default=None, metavar="QUANTITY",
                       help="override the configured budget (default: node annotation qosgate.io/protectable-memory,"
                            " else catalog protectablePercent x allocatable)")
    agent.add_argument("--reserve", type=quantity, default=256 * 2**20, metavar="QUANTITY",
                       help="memory never promised: budget <= total - outside-kubepods memory.min - reserve "
                            "(default 256Mi)")
    agent.add_argument("--kubelet-policy", choices=POLICY_CHOICES, default="observed",
                       help="KEP-2570 memoryReservationPolicy as observed from the tree (default), or as you know it")
    agent.add_argument("--nri-config", default="/etc/nri/memory-qos/config.yaml",
                       help="the NRI memory-qos plugin's config file ('' to not read it)")
    agent.add_argument("--nri-configmap", default="kube-system/nri-memory-qos-config.default", metavar="NS/NAME",
                       help="the NRI plugin's ConfigMap, read through the API when --nri-config is not readable "
                            "('' to not read it)")
    agent.add_argument("--offered-classes", default=None, metavar="OFFER",
                       help="classes this node enforces when the NRI config is not readable, e.g. "
                            "'memory-qos=gold,silver' (default: the node's qosgate.io/qos-classes annotation)")
    catalog = agent.add_mutually_exclusive_group()
    catalog.add_argument("--catalog", metavar="FILE",
                         help="class catalog YAML, fixed for the process (default: the catalog ConfigMap)")
    catalog.add_argument("--catalog-configmap", metavar="NS/NAME",
                         help="follow the catalog in this ConfigMap: an edit of protectablePercent or the classes "
                              "applies from the next pass (default qosgate-system/qosgate-classes; without a "
                              "cluster, the built-in catalog)")
    agent.add_argument("--dry-run", action="store_true", help="decide and report, write no cgroup file")
    agent.add_argument("--proc-root", default="/proc", help=argparse.SUPPRESS)
    agent.add_argument("--lease-namespace", default="qosgate-system")
    agent.add_argument("--event-namespace", default="default", help="namespace of the Node events (default)")
    agent.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    agent.add_argument("--log-format", default="json", choices=("json", "text"))
    agent.set_defaults(func=run_agent)
    return agent


def config_from_args(args: argparse.Namespace, api: KubeClient | None = None) -> Any:
    from qosgate.agent.engine import PassSettings
    from qosgate.agent.wiring import AgentConfig

    if not args.node_name:
        raise QosgateError("--node-name is required (or set NODE_NAME)")
    if args.passes is not None and args.passes < 1:
        raise QosgateError("--passes must be at least 1")
    if args.offered_classes is not None:
        try:
            parse_node_offer(args.offered_classes, "--offered-classes")
        except InvalidError as exc:
            raise QosgateError(str(exc)) from None
    settings = PassSettings(node=args.node_name, reserve=args.reserve, protectable_override=args.protectable_bytes,
                            kubelet_policy=args.kubelet_policy, offered_classes=args.offered_classes,
                            dry_run=args.dry_run)
    return AgentConfig(settings=settings, catalog=CatalogSource.of(args.catalog, args.catalog_configmap),
                       cgroup_root=args.cgroup_root, proc_root=args.proc_root,
                       nri_config=args.nri_config or None, state_file=args.state_file or None,
                       interval=args.interval, report_interval=args.report_interval,
                       lease_namespace=args.lease_namespace, event_namespace=args.event_namespace,
                       nri_configmap=args.nri_configmap or None)


def _passes(config: Any, api: KubeClient | None, count: int) -> dict[str, Any]:
    from qosgate.agent.cluster import ClusterState, EventRecorder, LeasePublisher, NodeInfo, list_pods_once
    from qosgate.agent.wiring import make_agent, with_catalog

    stoppers: list[Callable[[], object]] = []
    config = with_catalog(config, api, stoppers.append)
    for stop in stoppers:  # one pass (or N back to back) decides with the catalog read now
        stop()
    cluster = publisher = events = None
    if api is not None:
        store = list_pods_once(api, config.node)
        cluster = ClusterState(store, NodeInfo(api, config.node, nri_configmap=config.nri_configmap))
        publisher = LeasePublisher(api, config.node, config.report_interval, config.lease_namespace)
        events = EventRecorder(api, config.node, config.event_namespace)
    agent = make_agent(config, cluster)
    durations = []
    started = time.perf_counter()
    result = None
    for _ in range(count):
        result = agent.run_pass()
        durations.append(result.duration)
    assert result is not None
    published = publisher.publish(result.report, force=True) if publisher is not None else False
    if events is not None:
        events.overcommit(result.overcommit_detail)
    return {
        "node": config.node,
        "passes": count,
        "passSeconds": durations[-1],
        "passSecondsMin": min(durations),
        "passSecondsMean": sum(durations) / len(durations),
        "totalSeconds": time.perf_counter() - started,
        "writes": len(result.writes),
        "failedWrites": len(result.failed),
        "published": published,
        "maxRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "report": json.loads(encode(result.report)),
    }


def run_agent(args: argparse.Namespace) -> int:
    from qosgate.serving.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    api = None
    if not args.local:
        from qosgate.kube.config import load_api_client

        api = load_api_client(args.kubeconfig)
    config = config_from_args(args, api)
    if args.once or args.passes is not None:
        summary = _passes(config, api, args.passes or 1)
        sys.stdout.write(json.dumps(summary, separators=(",", ":")) + "\n")
        return 0

    from qosgate.agent.wiring import build_agent
    from qosgate.serving.health import health_routes
    from qosgate.serving.http import Router
    from qosgate.serving.lifecycle import Lifecycle, run
    from qosgate.serving.server import Listener, Server

    lifecycle = Lifecycle()
    try:
        build_agent(config, lifecycle, api)
        listeners = []
        if args.health_port:
            listeners.append(Listener("health", Router(health_routes(lifecycle.readiness), "health"),
                                      args.health_port, args.host))
        server = Server(listeners)
        try:
            server.bind()
        except OSError as exc:
            raise QosgateError(f"cannot listen on {args.host}:{args.health_port}: {exc.strerror}") from None
    except BaseException:
        lifecycle.stop()
        raise
    run(server, lifecycle, shutdown_delay=0.0, graceful_timeout=5.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m qosgate.cli.agent …`: the agent command alone (the DaemonSet's and the benchmark's entry)."""
    parser = argparse.ArgumentParser(prog="qosgate")
    add_agent_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["agent", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except QosgateError as exc:
        print(f"qosgate agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
