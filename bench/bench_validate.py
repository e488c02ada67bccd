"""/validate throughput and latency over real HTTPS, with and without the cross-replica quota ledger, in one run.

Three processes on loopback: the fake kube-apiserver (child), the webhook servers (child), the load generator
(this process, bench/loadgen.py: closed loop at --concurrency keep-alive connections). Every review is a pod
CREATE with a unique UID that asks for a quota'd class (listed with unlimited capacity, so every pod is
admitted and every admission writes a reservation). Modes, one port each, measured in turn:

  checks-only     static checks only (no quota engine)
  quota-local     quota engine, in-process reservations (one replica)
  quota-ledger    quota engine + ledger ConfigMap on the fake API (what several replicas run), validator in the
                  thread pool (qosgate.webhook.validate.add_validate_route)
  ledger-inline   the same engine called on the event loop (create_webhook_app(validate=...)), for comparison

The informer is simulated: each admitted pod is applied to the replica's PodStore ~10 ms later, as the watch
would deliver it, so observed reservations get pruned as in production (--observed-grace, default 1 s).

    python bench/bench_validate.py                                          # full run
    python bench/bench_validate.py --requests 300 --warmup 100 --seconds 1  # CI smoke

Two loads per mode: a closed loop at --concurrency connections (throughput; by Little's law its latency is
concurrency / throughput, mostly queueing), and an open loop at --rate req/s with up to --concurrency requests
in flight (latency as the apiserver sees it at that arrival rate; the p99 target of 15 ms applies here).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.loadgen import Result, closed_loop, open_loop

HOSTNAME = "qosgate-webhook.qosgate-system.svc"
MODES = ("checks-only", "quota-local", "quota-ledger", "ledger-inline")
QUOTA_YAML = "pod:\n- name: memory-qos\n  classes:\n  - {name: gold}\n  - {name: silver}\n"


# --- the fake API server child --------------------------------------------------------------------------

def run_fake_api(kubeconfig: str, namespaces: int) -> None:
    from tests.fakeapi import FakeAPIServer

    api = FakeAPIServer().start()
    api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
             for n in ("qosgate-system", *(f"team-{i}" for i in range(namespaces))))
    api.write_kubeconfig(kubeconfig + ".tmp")
    os.replace(kubeconfig + ".tmp", kubeconfig)
    threading.Event().wait()  # until terminated


# --- the webhook server child ---------------------------------------------------------------------------

def _simulated_watch(store: Any) -> queue.Queue:
    """Deliver admitted pods to the store shortly after admission, like the pod informer would."""
    pending: queue.Queue = queue.Queue()

    def run() -> None:
        while True:
            due, pod = pending.get()
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            store.apply("ADDED", pod)

    threading.Thread(target=run, daemon=True, name="simulated-watch").start()
    return pending


def _stats_endpoint(engine: Any, books: Any) -> Any:
    from fastapi import Response

    async def stats() -> Response:
        out: dict[str, Any] = {}
        if engine is not None:
            ledger = books("team-0")
            out = {"batches": engine.stats.batches, "batched": engine.stats.batched_requests,
                   "admitted": engine.stats.admitted, "unavailable": engine.stats.unavailable,
                   "conflicts": getattr(ledger, "conflicts", 0), "writes": getattr(ledger, "writes", 0),
                   "entries": len(ledger.read())}
        return Response(orjson.dumps(out), media_type="application/json")

    return stats


def serve(cert_dir: str, port_file: str, kubeconfig: str, observed_grace: float) -> None:
    from qosgate.core.catalog import CatalogHolder
    from qosgate.core.quota import load_quota_yaml
    from qosgate.kube.config import load_api_client
    from qosgate.kube.store import PodStore
    from qosgate.serving.tls import TLSServer
    from qosgate.webhook.app import create_webhook_app
    from qosgate.webhook.quota.books import ledger_books, local_books
    from qosgate.webhook.quota.engine import QuotaEngine
    from qosgate.webhook.quota.source import StaticQuotas
    from qosgate.webhook.validate import Validator, add_validate_route

    api_client = load_api_client(kubeconfig)
    quotas = StaticQuotas({"*": [load_quota_yaml(QUOTA_YAML, "bench quota")]})
    holder = CatalogHolder()
    apps = []
    for mode in MODES:
        store = PodStore()
        store.replace([], "1")
        engine = books = None
        if mode != "checks-only":
            books = local_books() if mode == "quota-local" else ledger_books(api_client)
            engine = QuotaEngine(store, quotas, books, observed_grace=observed_grace)
        watch = _simulated_watch(store)

        class Observed(Validator):
            def __call__(self, request: Any, watch: queue.Queue = watch) -> Any:
                response = super().__call__(request)
                if response.allowed and request.operation == "CREATE" and request.object is not None:
                    watch.put((time.monotonic() + 0.01, request.object))
                return response

        validator = Observed(holder, engine)
        if mode == "ledger-inline":
            app = create_webhook_app(holder, validate=validator)
        else:
            app = create_webhook_app(holder)
            add_validate_route(app, validator)

        app.add_api_route("/bench-stats", _stats_endpoint(engine, books if engine else None), methods=["GET"])
        apps.append((app, 0))
    server = TLSServer(apps, cert_dir, host="127.0.0.1", configure_logging=False, access_log=False)
    ports = server.bind()
    with open(port_file + ".tmp", "w") as handle:
        handle.write(" ".join(map(str, ports)))
    os.replace(port_file + ".tmp", port_file)
    server.run()


# --- the load generator (this process) ------------------------------------------------------------------

def review_bodies(count: int, namespaces: int) -> list[bytes]:
    """Pod CREATE reviews as the validating webhook sees them: mutated, with a fresh UID each."""
    import jsonpatch

    from qosgate.core.catalog import DEFAULT_CATALOG
    from qosgate.webhook.mutate import mutate_pod

    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "team-0", "labels": {"app": "web"},
                     "annotations": {"qos-resources.qosgate.io": "memory-qos=gold", "prometheus.io/scrape": "true"},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "web"}]},
        "spec": {
            "initContainers": [{"name": "proxy", "image": "envoy", "restartPolicy": "Always",
                                "resources": {"requests": {"memory": "128Mi", "cpu": "100m"},
                                              "limits": {"memory": "256Mi"}}}],
            "containers": [
                {"name": "app", "image": "web:1", "env": [{"name": f"E{j}", "value": "x" * 20} for j in range(10)],
                 "resources": {"requests": {"memory": "1Gi", "cpu": "500m"}, "limits": {"memory": "2Gi"}}},
                {"name": "log", "image": "fluent", "resources": {"requests": {"memory": "64Mi"},
                                                                  "limits": {"memory": "64Mi"}}},
            ],
        },
    }
    response = mutate_pod(pod, DEFAULT_CATALOG)
    assert response.allowed, response.message
    template = jsonpatch.apply_patch(pod, list(response.patch))
    bodies = []
    for i in range(count):
        obj = copy.deepcopy(template)
        namespace = f"team-{i % namespaces}"
        obj["metadata"].update(name=f"web-{i}", namespace=namespace, uid=str(uuid.uuid4()))
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "name": f"web-{i}",
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": obj, "oldObject": None, "dryRun": False}}
        bodies.append(orjson.dumps(review))
    return bodies


def _stats(port: int, ca_file: str) -> dict[str, Any]:
    from tests.support.tls import https_client

    with https_client(os.path.dirname(ca_file), port, timeout=10) as client:
        return client.get("/bench-stats").json()


def _describe(before: dict[str, Any], after: dict[str, Any]) -> str:
    batches = after["batches"] - before["batches"]
    batched = after["batched"] - before["batched"]
    return (f"admitted {after['admitted'] - before['admitted']}, {batches} batches "
            f"(avg {batched / max(batches, 1):.1f} requests), ledger writes {after['writes'] - before['writes']}, "
            f"409s {after['conflicts'] - before['conflicts']}, entries at end {after['entries']}, "
            f"unavailable {after['unavailable'] - before['unavailable']}")


async def measure(args: argparse.Namespace, ca_file: str, ports: list[int]) -> None:
    closed: dict[str, Result] = {}
    opened: dict[str, Result] = {}
    extra: dict[str, str] = {}
    modes = [m for m in MODES if m in args.modes]
    for mode, port in zip(MODES, ports, strict=True):
        if mode not in modes:
            continue
        # The inline mode serialises every ledger round trip on the event loop: fewer requests keep it short.
        requests = args.requests if mode != "ledger-inline" else max(args.requests // 5, 50)
        warm = review_bodies(args.warmup, args.namespaces)
        await closed_loop(port, ca_file, HOSTNAME, "/validate", warm, args.concurrency, len(warm))
        before = _stats(port, ca_file)
        bodies = review_bodies(requests, args.namespaces)
        closed[mode] = await closed_loop(port, ca_file, HOSTNAME, "/validate", bodies, args.concurrency, requests)
        after = _stats(port, ca_file)
        if after:
            extra[mode] = _describe(before, after)
        bodies = review_bodies(int(args.rate * args.seconds) + 1, args.namespaces)
        opened[mode] = await open_loop(port, ca_file, HOSTNAME, "/validate", bodies, args.rate, args.seconds,
                                       max_connections=args.concurrency)
    print(f"/validate over HTTPS, pod CREATE reviews asking for a quota'd class, {args.namespaces} namespace(s); "
          f"fake API and webhooks in 2 child processes, this load generator, {os.cpu_count()} CPU(s)")
    print(f"closed loop, {args.concurrency} concurrent connections ({args.requests} requests per mode, "
          f"ledger-inline {max(args.requests // 5, 50)}; after {args.warmup} warm-up):")
    for mode in modes:
        print(closed[mode].line(f"  {mode}"))
        if mode in extra:
            print(f"  {'':<34} {extra[mode]}")
    print(f"open loop at {args.rate:.0f} req/s for {args.seconds:.0f} s, up to {args.concurrency} concurrent "
          "(latency includes queueing):")
    for mode in modes:
        print(opened[mode].line(f"  {mode}"))
    if "quota-ledger" not in opened:
        return
    p99 = opened["quota-ledger"].percentile(99) * 1e3
    print(f"  quota-ledger p99 {p99:.2f} ms at {args.rate:.0f} req/s (target <= 15 ms): "
          f"{'met' if p99 <= 15 else 'NOT met'}")


def _wait_for(path: str, child: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline or child.poll() is not None:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5000, help="measured reviews per mode")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200.0,
                        help="open-loop arrival rate, req/s (default 200: a busy cluster's pod creation rate)")
    parser.add_argument("--seconds", type=float, default=5.0, help="open-loop duration per mode")
    parser.add_argument("--namespaces", type=int, default=1,
                        help="spread the pods over this many namespaces (1 = every admission contends on one ledger)")
    parser.add_argument("--observed-grace", type=float, default=1.0,
                        help="seconds an observed reservation stays in the ledger (production default 5)")
    parser.add_argument("--modes", type=lambda v: v.split(","), default=list(MODES),
                        help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--serve", nargs=3, metavar=("CERT_DIR", "PORT_FILE", "KUBECONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--fake-api", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_api:
        run_fake_api(args.fake_api, args.namespaces)
        return
    if args.serve:
        serve(*args.serve, args.observed_grace)
        return

    from qosgate.certs.generate import ensure_certificates

    me = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory() as tmp:
        cert_dir = os.path.join(tmp, "certs")
        ensure_certificates(cert_dir, "qosgate-webhook", "qosgate-system")
        kubeconfig, port_file = os.path.join(tmp, "kubeconfig"), os.path.join(tmp, "ports")
        children = [subprocess.Popen([sys.executable, me, "--fake-api", kubeconfig,
                                      "--namespaces", str(args.namespaces)])]
        try:
            _wait_for(kubeconfig, children[0], "fake API server")
            children.append(subprocess.Popen([sys.executable, me, "--serve", cert_dir, port_file, kubeconfig,
                                              "--observed-grace", str(args.observed_grace)]))
            _wait_for(port_file, children[1], "webhook server")
            with open(port_file) as handle:
                ports = [int(p) for p in handle.read().split()]
            time.sleep(0.5)
            asyncio.run(measure(args, os.path.join(cert_dir, "ca.crt"), ports))
        finally:
            for child in reversed(children):
                child.terminate()
                child.wait(timeout=30)


if __name__ == "__main__":
    main()
