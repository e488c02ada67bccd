"""/validate as served by `qosgate serve webhook`, with the cross-replica quota ledger on a fake API, in one run.

Processes (bench/procs.py): the API server — the fake kube-apiserver (tests/fakeapi) in a side process, or
with `--api real` kube-apiserver + etcd built by tests/realcluster/build — seeded with the namespaces and a
quota ConfigMap per namespace (a class with a capacity far above what the run admits, so every pod is
admitted and every admission is decided against the namespace's ledger ConfigMap: capacity held ahead by
the replica, refilled in the background); `qosgate serve webhook --kubeconfig …` (cluster mode: pod and
quota caches, ledger, group commit, allowances — what a replica runs);
`qosgate serve webhook --local` (checks only, no quotas); the null webhook served the same way
(bench/nullserve.py, reviews posted to its /mutate); the load generator in its own process (bench/loadgen.py).

Every review is a pod CREATE with a unique UID. Nothing creates the pods afterwards, so their slots are
released only by the TTL; `--reservation-ttl` (default 5 s, the production observed-grace) makes that what
production sees at the same rate (pods observed within milliseconds, slots handed back after the grace).

Figures: closed-loop throughput at --concurrency connections; p99 under an open-loop arrival rate (--rate,
default 200 req/s: a busy cluster's pod creation rate; target for the ledger ≤ 15 ms); the quota engine's
batches, ledger conflicts and unavailable decisions from the webhook's /metrics.

    python bench/bench_validate.py            # full run
    python bench/bench_validate.py --smoke    # seconds: proves the benchmark works (figures mean nothing)
"""

from __future__ import annotations

import argparse
import copy
import http.client
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.loadgen import LoadGen, Result, Target
from bench.procs import WEBHOOK_HOSTNAME, Proc, fake_api, make_certs, processes, serve_null, serve_qosgate
from bench.report import Table, fetch

# A capacity no run reaches: every pod is admitted, and every admission is still decided against the ledger.
QUOTA_YAML = "pod:\n- name: memory-qos\n  classes:\n  - {name: gold, capacity: 10000000}\n  - {name: silver}\n"


def seed_objects(namespaces: str) -> list[dict[str, Any]]:
    """The fake API's content (called in its process): namespaces and one quota ConfigMap in each."""
    names = [f"team-{i}" for i in range(int(namespaces))]
    objects: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                                     for n in ("qosgate-system", *names)]
    objects += [{"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "quota", "namespace": n, "labels": {"qosgate.io/quota": "true"}},
                 "data": {"quota.yaml": QUOTA_YAML}} for n in names]
    return objects


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
        obj["metadata"].update(name=f"web-{uuid.uuid4().hex[:10]}", namespace=namespace, uid=str(uuid.uuid4()))
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "name": obj["metadata"]["name"],
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": obj, "oldObject": None, "dryRun": False}}
        bodies.append(orjson.dumps(review))
    return bodies


def quota_metrics(proc: Proc) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", proc.ports["health"], timeout=30)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    wanted = ("qosgate_quota_admissions", "qosgate_quota_batches", "qosgate_quota_batched_requests",
              "qosgate_quota_held_admissions", "qosgate_ledger_conflicts_total")
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            key = name.replace('qosgate_quota_admissions{outcome="', "admissions_").replace('"}', "")
            found[key.split("{")[0]] = found.get(key.split("{")[0], 0.0) + float(value)
    return found


def ledger_round_trip(kubeconfig: str, namespace: str = "team-0", count: int = 20) -> tuple[int, float]:
    """The API server's own cost per ledger write: entries in the ledger ConfigMap, median ms of GET + PUT.

    Every group-commit batch pays at least this; admissions against held capacity do not."""
    import statistics
    import time

    from qosgate.kube.config import load_api_client
    from qosgate.kube.rest import request_json
    from qosgate.webhook.quota.books import ledger_name

    api = load_api_client(kubeconfig)
    path = f"/api/v1/namespaces/qosgate-system/configmaps/{ledger_name(namespace)}"
    times, entries = [], 0
    for _ in range(count):
        started = time.perf_counter()
        ledger = request_json(api, "GET", path)
        request_json(api, "PUT", path, body=ledger)
        times.append(time.perf_counter() - started)
        entries = len(ledger.get("data") or {})
    return entries, statistics.median(times) * 1e3


def describe(before: dict[str, float], after: dict[str, float]) -> str:
    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    batches = delta("qosgate_quota_batches")
    return (f"admitted {delta('admissions_admitted'):.0f} ({delta('qosgate_quota_held_admissions'):.0f} against held "
            f"capacity), unavailable {delta('admissions_unavailable'):.0f}, {batches:.0f} ledger batches "
            f"(avg {delta('qosgate_quota_batched_requests') / max(batches, 1):.1f} requests), "
            f"409 conflicts {delta('qosgate_ledger_conflicts_total'):.0f}")


def real_api(work: Path, namespaces: int, stack: Any) -> str:
    """kube-apiserver + etcd (tests/realcluster) seeded like the fake; returns the admin kubeconfig."""
    from qosgate.kube.config import load_api_client
    from qosgate.kube.rest import request_json
    from tests.realcluster.controlplane import ControlPlane

    plane = ControlPlane(work / "control-plane").start()
    stack.callback(plane.stop)
    client = load_api_client(str(plane.admin_kubeconfig))
    for obj in seed_objects(str(namespaces)):
        path = ("/api/v1/namespaces" if obj["kind"] == "Namespace"
                else f"/api/v1/namespaces/{obj['metadata']['namespace']}/configmaps")
        try:
            request_json(client, "POST", path, body=obj)
        except Exception as exc:  # qosgate-system may exist already
            if "AlreadyExists" not in str(exc):
                raise
    return str(plane.admin_kubeconfig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5000, help="closed-loop reviews per server")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop arrival rate, req/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="open-loop duration per server")
    parser.add_argument("--namespaces", type=int, default=1,
                        help="spread the pods over this many namespaces (1 = every admission contends on one ledger)")
    parser.add_argument("--reservation-ttl", type=float, default=5.0)
    parser.add_argument("--loadgen-processes", type=int, default=1)
    parser.add_argument("--api", choices=("fake", "real"), default="fake",
                        help="the fake API server, or kube-apiserver + etcd from tests/realcluster/build")
    parser.add_argument("--smoke", action="store_true", help="tiny counts (CI): proves the benchmark works")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.warmup, args.seconds, args.rate = 300, 100, 1.0, 100.0

    closed: dict[str, Result] = {}
    opened: dict[str, Result] = {}
    extra: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp, processes() as stack, LoadGen(args.loadgen_processes) as load:
        work = Path(tmp)
        certs = make_certs(work / "certs")
        ca = str(certs / "ca.crt")
        if args.api == "real":
            kubeconfig = real_api(work, args.namespaces, stack)
        else:
            api = fake_api(work, "bench.bench_validate:seed_objects", str(args.namespaces))
            stack.callback(api.stop)
            kubeconfig = api.info["kubeconfig"]
        servers: dict[str, Proc] = {
            "null": serve_null(certs, work, ["webhook"]),
            "checks only (--local)": serve_qosgate("webhook", certs, work, "--local"),
            "quota ledger (cluster)": serve_qosgate("webhook", certs, work, "--kubeconfig", kubeconfig,
                                                    "--reservation-ttl", str(args.reservation_ttl)),
        }
        for proc in servers.values():
            stack.callback(proc.stop)
        sample = review_bodies(1, args.namespaces)[0]
        for name, proc in servers.items():
            target = Target(proc.ports["webhook"], ca, WEBHOOK_HOSTNAME)
            path = "/mutate" if name == "null" else "/validate"
            status, answer = fetch(target, path, sample)
            assert status == 200 and b'"allowed":true' in answer, (name, answer[:300])
            load.closed(target, path, review_bodies(args.warmup, args.namespaces), connections=args.concurrency,
                        requests=args.warmup)
            quota = name.startswith("quota")
            before = quota_metrics(proc) if quota else {}
            closed[name] = load.closed(target, path, review_bodies(args.requests, args.namespaces),
                                       connections=args.concurrency, requests=args.requests)
            bodies = review_bodies(int(args.rate * args.seconds) + 1, args.namespaces)
            opened[name] = load.open(target, path, bodies, rate=args.rate, seconds=args.seconds,
                                     connections=args.concurrency)
            if quota:
                entries, round_trip = ledger_round_trip(kubeconfig)
                extra[name] = (describe(before, quota_metrics(proc)) + f"; {args.api} API GET+PUT of the ledger "
                               f"({entries} entries): median {round_trip:.1f} ms")

    load_average = os.getloadavg()[0]
    print(f"/validate over HTTPS ({args.api} API server): pod CREATE reviews asking for a quota'd class, "
          f"{args.namespaces} namespace(s), "
          f"reservation TTL {args.reservation_ttl:.0f} s; {os.cpu_count()} CPUs, load average {load_average:.1f}")
    print(f"closed loop, {args.concurrency} keep-alive connections, {args.requests} reviews per server:")
    for name, result in closed.items():
        print(result.line(f"  {name}"))
    print(f"open loop at {args.rate:.0f} req/s for {args.seconds:.0f} s, up to {args.concurrency} in flight "
          "(latency from the scheduled arrival):")
    for name, result in opened.items():
        print(result.line(f"  {name}"))
        if name in extra:
            print(f"  {'':<30} {extra[name]}")
    table = Table("webhook /validate")
    ledger = opened["quota ledger (cluster)"]
    p99 = ledger.percentile(99) * 1e3
    local = opened["checks only (--local)"].percentile(99) * 1e3
    table.add(f"ledger p99 at {args.rate:.0f} req/s open loop", f"{p99:.2f} ms (null "
              f"{opened['null'].percentile(99) * 1e3:.2f}, local {local:.2f})", None,
              "<= 15 ms", p99 <= 15 and not ledger.errors)
    table.add("ledger closed-loop throughput vs null", f"{closed['quota ledger (cluster)'].throughput:.0f} / "
              f"{closed['null'].throughput:.0f} req/s",
              closed["quota ledger (cluster)"].throughput / closed["null"].throughput, "", None)
    table.print()


if __name__ == "__main__":
    main()
