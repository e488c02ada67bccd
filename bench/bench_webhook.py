"""/mutate throughput and latency vs a null webhook on the same FastAPI + uvicorn + TLS stack, in one run.

The servers run in a child process (one core), the load generator here (the other core). Prints
admissions/s, p50/p99 for a closed loop at --concurrency connections, and p99 under a fixed open-loop
rate, for the null webhook and /mutate side by side, plus the throughput ratio (target ≥ 0.8).

    python bench/bench_webhook.py                # full run
    python bench/bench_webhook.py --requests 2000 --seconds 2   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid

import orjson
from fastapi import FastAPI, Request, Response

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.loadgen import closed_loop, open_loop
from qosgate.certs.generate import ensure_certificates

HOSTNAME = "qosgate-webhook.qosgate-system.svc"


def null_webhook_app() -> FastAPI:
    """Same stack, no logic: decode the review, echo the uid, allow."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        review = orjson.loads(await request.body())
        return Response(orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                      "response": {"uid": review["request"]["uid"], "allowed": True}}),
                        media_type="application/json")

    return app


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


def serve(cert_dir: str, port_file: str) -> None:
    from qosgate.core.catalog import CatalogHolder
    from qosgate.serving.tls import TLSServer
    from qosgate.webhook.app import create_webhook_app

    server = TLSServer([(null_webhook_app(), 0), (create_webhook_app(CatalogHolder()), 0)], cert_dir,
                       host="127.0.0.1", configure_logging=False, access_log=False)
    ports = server.bind()
    with open(port_file + ".tmp", "w") as handle:
        handle.write(" ".join(map(str, ports)))
    os.replace(port_file + ".tmp", port_file)
    server.run()


async def measure(args: argparse.Namespace, ca_file: str, ports: list[int]) -> None:
    bodies = review_bodies()
    null_port, mutate_port = ports
    # Warm both (JIT-free Python still warms caches, TLS sessions, allocator).
    for port in ports:
        await closed_loop(port, ca_file, HOSTNAME, "/mutate", bodies, args.concurrency, min(args.requests, 2000))
    rounds = {"null": [], "mutate": []}
    for _ in range(args.rounds):  # interleave so drift on a noisy machine hits both alike
        rounds["null"].append(await closed_loop(null_port, ca_file, HOSTNAME, "/mutate", bodies,
                                                args.concurrency, args.requests))
        rounds["mutate"].append(await closed_loop(mutate_port, ca_file, HOSTNAME, "/mutate", bodies,
                                                  args.concurrency, args.requests))
    best = {k: max(v, key=lambda r: r.throughput) for k, v in rounds.items()}
    print(f"closed loop, {args.concurrency} concurrent connections, {args.requests} requests per round, "
          f"best of {args.rounds}:")
    print(best["null"].line("  null webhook"))
    print(best["mutate"].line("  qosgate /mutate"))
    ratio = best["mutate"].throughput / best["null"].throughput
    print(f"  throughput ratio mutate/null: {ratio:.2f}  (target >= 0.80)")
    rate = args.rate or 0.5 * best["null"].throughput
    print(f"open loop at {rate:.0f} req/s for {args.seconds:.0f} s (latency includes queueing):")
    for label, port in (("null webhook", null_port), ("qosgate /mutate", mutate_port)):
        result = await open_loop(port, ca_file, HOSTNAME, "/mutate", bodies, rate, args.seconds,
                                 max_connections=args.concurrency)
        print(result.line(f"  {label}"))
    print("  (target: /mutate p99 <= 5 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.0, help="open-loop rate (default: half the null throughput)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", nargs=2, metavar=("CERT_DIR", "PORT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cert_dir = os.path.join(tmp, "certs")
        ensure_certificates(cert_dir, "qosgate-webhook", "qosgate-system")
        port_file = os.path.join(tmp, "ports")
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", cert_dir, port_file])
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(port_file):
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit("benchmark server did not start")
                time.sleep(0.05)
            with open(port_file) as handle:
                ports = [int(p) for p in handle.read().split()]
            time.sleep(0.5)
            asyncio.run(measure(args, os.path.join(cert_dir, "ca.crt"), ports))
        finally:
            child.terminate()
            child.wait(timeout=30)


if __name__ == "__main__":
    main()
