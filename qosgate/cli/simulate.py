"""`qosgate simulate`: the command line of the scheduling simulator (qosgate.simulate)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from qosgate.cli.argtypes import quantity, seconds
from qosgate.core.types import ACCOUNTING_MODES, ClassKey
from qosgate.simulate.client import ExtenderClient, ExtenderUnavailable
from qosgate.simulate.driver import Simulator
from qosgate.simulate.inprocess import in_process_extender
from qosgate.simulate.model import MI, SIM_SCHEDULER, SimulationConfig


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be within 0..1")
    return value


def _classes(text: str) -> tuple[ClassKey, ...]:
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        resource, eq, klass = part.partition("=")
        if not eq or not resource or not klass:
            raise argparse.ArgumentTypeError(f"{part!r} is not resource=class")
        pairs.append((resource, klass))
    return tuple(pairs)


def add_simulate_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    sim = subparsers.add_parser(
        "simulate", help="schedule synthetic pods through the extender the way kube-scheduler does",
        description="Creates pending pods in --namespace (schedulerName qosgate-simulator, so a real "
                    "scheduler ignores them), schedules them one at a time through the extender "
                    "(filter → prioritize → asynchronous bind) and reports placements, reasons and pods/s. "
                    "Binds are real: use a test cluster or the fake API. Created pods are deleted "
                    "afterwards unless --keep-pods.")
    sim.add_argument("--kubeconfig", help="API server to read nodes from and create pods in")
    sim.add_argument("--extender-url", help="https://host:port of a running extender (default: start one "
                                            "in-process against the same API)")
    sim.add_argument("--ca-file", help="CA that signed the extender's certificate")
    sim.add_argument("--server-name", help="name to verify in the extender's certificate "
                                           "(default: the URL's host)")
    sim.add_argument("--cert-file", help="client certificate the extender accepts (kube-scheduler's "
                                         "tlsConfig.certFile)")
    sim.add_argument("--key-file", help="key of --cert-file")
    sim.add_argument("--insecure-skip-verify", action="store_true", help="do not verify the extender (testing)")
    sim.add_argument("--pods", type=int, default=200, help="pods to create (default 200; 0 = existing only)")
    sim.add_argument("--namespace", default="qosgate-sim")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--min-memory-min", type=quantity, default=256 * MI, metavar="QUANTITY")
    sim.add_argument("--max-memory-min", type=quantity, default=8 * 1024 * MI, metavar="QUANTITY")
    sim.add_argument("--zero-fraction", type=_fraction, default=0.1, help="pods without memory.min")
    sim.add_argument("--classes", type=_classes, default=(), metavar="RES=CLASS,...",
                     help="QoS classes to hand out, e.g. memory-qos=gold,memory-qos=silver")
    sim.add_argument("--class-fraction", type=_fraction, default=0.0)
    sim.add_argument("--bind-workers", type=int, default=16)
    sim.add_argument("--bind-delay", type=seconds, default=0.0, help="max random delay before each bind (s)")
    sim.add_argument("--bind-timeout-rate", type=_fraction, default=0.0)
    sim.add_argument("--bind-duplicate-rate", type=_fraction, default=0.0)
    sim.add_argument("--nodes-per-filter", type=int, default=0)
    sim.add_argument("--no-prioritize", action="store_true", help="as with no prioritizeVerb configured")
    sim.add_argument("--scheduler-name", default=SIM_SCHEDULER)
    sim.add_argument("--keep-pods", action="store_true")
    sim.add_argument("--protectable-percent", type=int, default=90, help="must match the extender's catalog")
    sim.add_argument("--accounting", choices=ACCOUNTING_MODES, default="annotated")
    sim.add_argument("--strategy", choices=("spread", "binpack"), default="spread", help="in-process extender")
    sim.add_argument("--bind-failure-rate", type=_fraction, default=0.0, help="in-process extender: injected "
                                                                             "binding failures")
    sim.add_argument("-o", "--output", choices=("text", "json"), default="text")
    sim.set_defaults(func=run_simulate)
    return sim


def run_simulate(args: argparse.Namespace) -> int:
    """0: every pod placed or explained and nothing overcommitted; 1: a check failed; 2: cannot run."""
    from qosgate.kube.config import KubeConfigError, load_api_client
    from qosgate.kube.rest import KubeError

    if args.min_memory_min > args.max_memory_min:
        print("qosgate simulate: --min-memory-min exceeds --max-memory-min", file=sys.stderr)
        return 2
    config = SimulationConfig(
        pods=args.pods, namespace=args.namespace, seed=args.seed, min_memory_min=args.min_memory_min,
        max_memory_min=args.max_memory_min, zero_fraction=args.zero_fraction, classes=args.classes,
        class_fraction=args.class_fraction, scheduler_name=args.scheduler_name, bind_workers=args.bind_workers,
        bind_delay=args.bind_delay, bind_timeout_rate=args.bind_timeout_rate,
        bind_duplicate_rate=args.bind_duplicate_rate, nodes_per_filter=args.nodes_per_filter,
        prioritize=not args.no_prioritize,
        accounting=args.accounting, protectable_percent=args.protectable_percent)
    try:
        api = load_api_client(args.kubeconfig)
        with contextlib.ExitStack() as stack:
            if args.extender_url:
                client = ExtenderClient(args.extender_url, args.ca_file, args.server_name,
                                        insecure=args.insecure_skip_verify, cert_file=args.cert_file,
                                        key_file=args.key_file)
                stack.callback(client.close)
            else:
                client = stack.enter_context(in_process_extender(
                    api, args.protectable_percent, args.accounting, args.strategy, args.bind_failure_rate,
                    args.seed))
            simulator = Simulator(api, client, config)
            report = simulator.run()
            if not args.keep_pods:
                simulator.cleanup()
    except (KubeConfigError, KubeError, ExtenderUnavailable, ValueError, OSError) as exc:
        print(f"qosgate simulate: {exc}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(report.render())
    return 0 if report.ok else 1
