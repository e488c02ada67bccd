"""/mutate as served by `qosgate serve webhook --local`, next to the null webhook served the same way, in one run.

Processes (bench/procs.py): `qosgate serve webhook --local` (what a user runs), bench/nullserve.py (the same
qosgate.serving Server/Listener/TLS/uvloop path with `null_webhook_routes()`: decode, allow, encode), a bare
TLS server with TCP_NODELAY and one write per response (the floor of a round trip), and the load generator
in its own process(es) on uvloop (bench/loadgen.py), whose CPU is measured so it is never silently the
bottleneck. Figures:

* throughput: closed loop at --concurrency keep-alive connections, best of --rounds interleaved rounds;
  ratio qosgate/null (target ≥ 0.8), and each server's CPU per request (from /proc)
* p99 under a fixed open-loop arrival rate (--rate, default 1,000 req/s; target ≤ 5 ms)
* keep-alive latency: one connection, one request at a time; median vs the null webhook (TCP_NODELAY, TLS,
  same stack; target within 4×) and vs the bare TCP_NODELAY TLS server (the floor; for information)

    python bench/bench_webhook.py            # full run
    python bench/bench_webhook.py --smoke    # seconds: proves the benchmark works (figures mean nothing)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.loadgen import LoadGen, Result, Target
from bench.procs import WEBHOOK_HOSTNAME, Proc, bare_tls, make_certs, processes, serve_null, serve_qosgate
from bench.report import Table, fetch


def review_bodies(count: int = 64) -> list[bytes]:
    """Realistic pods: carrier annotations, two containers, a sidecar, labels; some without classes."""
    bodies = []
    for i in range(count):
        annotations = {"app.kubernetes.io/version": "1.2.3", "prometheus.io/scrape": "true"}
        if i % 4:
            annotations["qos-resources.qosgate.io"] = ("memory-qos=gold", "memory-qos=silver", "memory-qos=gold")[i % 3]
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": f"web-{i}-", "namespace": "team-a", "labels": {"app": "web"},
                         "annotations": annotations, "ownerReferences": [{"kind": "ReplicaSet", "name": "web"}]},
            "spec": {
                "initContainers": [{"name": "proxy", "image": "envoy", "restartPolicy": "Always",
                                    "resources": {"requests": {"memory": "128Mi", "cpu": "100m"}}}],
                "containers": [
                    {"name": "app", "image": "web:1", "env": [{"name": f"E{j}", "value": "x" * 20} for j in range(10)],
                     "resources": {"requests": {"memory": "1Gi", "cpu": "500m"}, "limits": {"memory": "2Gi"}}},
                    {"name": "log", "image": "fluent", "resources": {"requests": {"memory": "64Mi"}}},
                ],
            },
        }
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "name": "", "namespace": "team-a",
            "operation": "CREATE", "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": None, "dryRun": False}}
        bodies.append(orjson.dumps(review))
    return bodies


def closed_rounds(load: LoadGen, servers: dict[str, tuple[Proc, Target]], bodies: list[bytes],
                  args: argparse.Namespace) -> dict[str, tuple[Result, float]]:
    """Best round per server (interleaved, so drift on a noisy machine hits both alike) and its CPU/request."""
    best: dict[str, tuple[Result, float]] = {}
    for _ in range(args.rounds):
        for name, (proc, target) in servers.items():
            cpu = proc.cpu_seconds()
            result = load.closed(target, "/mutate", bodies, connections=args.concurrency, requests=args.requests)
            per_request = (proc.cpu_seconds() - cpu) / result.requests
            if name not in best or result.throughput > best[name][0].throughput:
                best[name] = (result, per_request)
    return best


def keepalive(load: LoadGen, targets: dict[str, Target], bodies: list[bytes], requests: int,
              rounds: int) -> dict[str, Result]:
    merged: dict[str, list[Result]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, target in targets.items():
            merged[name].append(load.sequential(target, "/mutate", bodies, max(requests // rounds, 1)))
    return {name: Result(sum(r.requests for r in parts), sum(r.seconds for r in parts),
                         [x for r in parts for x in r.latencies], sum(r.errors for r in parts),
                         sum(r.cpu_seconds for r in parts)) for name, parts in merged.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50, help="closed-loop keep-alive connections")
    parser.add_argument("--requests", type=int, default=20_000, help="closed-loop requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop arrival rate, req/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="open-loop duration")
    parser.add_argument("--sequential", type=int, default=3000, help="keep-alive round trips per server")
    parser.add_argument("--loadgen-processes", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--smoke", action="store_true", help="tiny counts (CI): proves the benchmark works")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.rounds, args.rate, args.seconds, args.sequential = 300, 1, 200.0, 0.5, 100

    with tempfile.TemporaryDirectory() as tmp, processes() as stack, LoadGen(args.loadgen_processes) as load:
        work = Path(tmp)
        certs = make_certs(work / "certs")
        ca = str(certs / "ca.crt")
        qosgate = serve_qosgate("webhook", certs, work, "--local")
        stack.callback(qosgate.stop)
        null = serve_null(certs, work, ["webhook"])
        stack.callback(null.stop)
        bodies = review_bodies()
        ours = Target(qosgate.ports["webhook"], ca, WEBHOOK_HOSTNAME)
        theirs = Target(null.ports["webhook"], ca, WEBHOOK_HOSTNAME)
        status, sample = fetch(ours, "/mutate", bodies[1])
        assert status == 200 and b'"patch"' in sample, sample[:300]
        bare = bare_tls(certs, work, sample)
        stack.callback(bare.stop)
        floor = Target(bare.ports["bare"], ca, WEBHOOK_HOSTNAME)
        for target in (ours, theirs):  # warm: TLS sessions, allocator, caches
            load.closed(target, "/mutate", bodies, connections=args.concurrency, requests=min(args.requests, 2000))

        servers = {"null": (null, theirs), "qosgate": (qosgate, ours)}
        closed = closed_rounds(load, servers, bodies, args)
        opened = {name: load.open(target, "/mutate", bodies, rate=args.rate, seconds=args.seconds,
                                  connections=args.concurrency) for name, (_proc, target) in servers.items()}
        sequential = keepalive(load, {"bare": floor, "null": theirs, "qosgate": ours}, bodies, args.sequential,
                               rounds=5 if not args.smoke else 1)

    print(f"/mutate, `qosgate serve webhook --local` vs the null webhook served the same way; {os.cpu_count()} CPUs, "
          f"load generator: {args.loadgen_processes} process(es) on uvloop")
    print(f"closed loop, {args.concurrency} keep-alive connections, {args.requests} requests per round, "
          f"best of {args.rounds}:")
    for name in ("null", "qosgate"):
        result, cpu = closed[name]
        print(result.line(f"  {name}") + f"  server CPU {cpu * 1e6:5.0f} µs/req")
    print(f"open loop at {args.rate:.0f} req/s for {args.seconds:.0f} s, up to {args.concurrency} in flight "
          "(latency from the scheduled arrival):")
    for name in ("null", "qosgate"):
        print(opened[name].line(f"  {name}"))
    print(f"keep-alive round trips, one connection, one request at a time ({args.sequential} per server):")
    for name in ("bare", "null", "qosgate"):
        print(sequential[name].line(f"  {name}"))
    saturated = [r for r, _ in closed.values() if r.saturated] + [r for r in opened.values() if r.saturated]
    if saturated:
        print(f"  WARNING: the load generator was busy {max(r.busy for r in saturated):.0%}: throughput figures "
              "may be the generator's limit, not the server's (raise --loadgen-processes)")

    table = Table("webhook /mutate")
    ratio = closed["qosgate"][0].throughput / closed["null"][0].throughput
    table.add("throughput qosgate/null", f"{closed['qosgate'][0].throughput:.0f} / "
              f"{closed['null'][0].throughput:.0f} req/s", ratio, ">= 0.80", ratio >= 0.8)
    p99 = opened["qosgate"].percentile(99) * 1e3
    table.add(f"p99 at {args.rate:.0f} req/s open loop", f"{p99:.2f} ms (null "
              f"{opened['null'].percentile(99) * 1e3:.2f})", None, "<= 5 ms", p99 <= 5)
    median = {name: sequential[name].median * 1e3 for name in sequential}
    vs_null = median["qosgate"] / median["null"]
    table.add("keep-alive median vs null (TCP_NODELAY TLS)", f"{median['qosgate']:.3f} / {median['null']:.3f} ms",
              vs_null, "within 4x", vs_null <= 4)
    table.add("keep-alive median vs bare TLS server (floor)", f"{median['qosgate']:.3f} / {median['bare']:.3f} ms",
              median["qosgate"] / median["bare"], "(info)", None)
    table.print()


if __name__ == "__main__":
    main()
