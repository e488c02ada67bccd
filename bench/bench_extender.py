"""The scheduler extender as served by `qosgate serve extender`, synced from a fake API holding a cluster.

Processes (bench/procs.py): the fake kube-apiserver (tests/fakeapi) in a side process, seeded with --nodes
nodes (5,000), --pods bound pods (150,000) and pending pods to bind; `qosgate serve extender --kubeconfig …`
(watch caches synced from it, binds through it — what kube-scheduler calls); the null extender served the
same way (bench/nullserve.py: `null_extender_routes()`, client certificate required too); the load
generator in its own process (bench/loadgen.py) presenting the cert dir's client pair (client.crt/key), as
kube-scheduler does. Printed, null and qosgate side by side:

- start → ready of the extender process (LIST of every node and pod, caches built) and its RSS after sync;
- /filter with NodeNames of 500 (the scheduler's sample at 5,000 nodes; target p99 ≤ 3 ms) and of 5,000
  (percentageOfNodesToScore 100; target p99 ≤ 15 ms), one call at a time as kube-scheduler makes them;
- /prioritize with 500 names; /bind with --bind-concurrency binds in flight (real pods/binding calls);
- scheduling throughput: qosgate.simulate driving filter (500 names) → prioritize → asynchronous binds as
  kube-scheduler does, in pods/s, with the extender's CPU per pod.

    python bench/bench_extender.py            # full size
    python bench/bench_extender.py --smoke    # seconds: proves the benchmark works (figures mean nothing)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.loadgen import LoadGen, Result, Target
from bench.procs import EXTENDER_HOSTNAME, Proc, fake_api, make_certs, processes, serve_null, serve_qosgate
from bench.report import Table, fetch

GI, MI = 2**30, 2**20
PENDING_PREFIX = "pending-"


# --- the cluster, generated identically in both processes ------------------------------------------------

def node_name(i: int) -> str:
    return f"node-{i:05d}"


def node_object(i: int) -> dict[str, Any]:
    """A Node shaped like a real one (labels, conditions, images): what the `Nodes` form carries."""
    name = node_name(i)
    annotations = {"node.alpha.kubernetes.io/ttl": "0",
                   "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
    if i % 3 == 0:
        annotations["qosgate.io/qos-classes"] = "memory-qos=gold:40,silver,bronze"
    if i % 10 == 0:
        annotations["qosgate.io/protectable-memory"] = "48Gi"
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "node.kubernetes.io/instance-type": "m6i.4xlarge", "topology.kubernetes.io/zone": f"zone-{i % 3}",
              "topology.kubernetes.io/region": "region-1", "beta.kubernetes.io/os": "linux"}
    conditions = [{"type": t, "status": "False" if t != "Ready" else "True", "reason": f"Kubelet{t}",
                   "message": f"kubelet reports {t}", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                   "lastTransitionTime": "2026-01-01T00:00:00Z"}
                  for t in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")]
    images = [{"names": [f"registry.example/team/app-{j}@sha256:{j:064x}", f"registry.example/team/app-{j}:v{j}"],
               "sizeBytes": 100_000_000 + j} for j in range(12)]
    resources = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "200Gi"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"node-uid-{i}", "resourceVersion": str(1000 + i),
                         "labels": labels, "annotations": annotations},
            "spec": {"podCIDR": f"10.{i // 250}.{i % 250}.0/24", "providerID": f"aws:///zone/i-{i:012x}"},
            "status": {"capacity": resources, "allocatable": resources, "conditions": conditions,
                       "addresses": [{"type": "InternalIP", "address": f"10.0.{i // 250}.{i % 250}"},
                                     {"type": "Hostname", "address": name}],
                       "nodeInfo": {"kubeletVersion": "v1.34.0", "containerRuntimeVersion": "containerd://2.1",
                                    "osImage": "Linux", "kernelVersion": "6.8", "architecture": "amd64"},
                       "images": images}}


def pod_object(name: str, uid: str, memory_min: int, gold: bool, node: str = "") -> dict[str, Any]:
    annotations = {"qosgate.io/memory-min": str(memory_min)}
    if gold:
        annotations["qos-resources.qosgate.io"] = "memory-qos=gold"
    spec: dict[str, Any] = {"schedulerName": "default-scheduler", "containers": [
        {"name": "app", "image": "registry.example/team/app:v1",
         "resources": {"requests": {"memory": str(memory_min), "cpu": "250m"}, "limits": {"memory": str(memory_min)}},
         "env": [{"name": f"VAR_{j}", "value": "x" * 16} for j in range(6)]}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": f"team-{zlib.crc32(name.encode()) % 50}", "uid": uid,
                         "labels": {"app": name.rsplit("-", 1)[0]}, "annotations": annotations},
            "spec": spec, "status": {"phase": "Running" if node else "Pending"}}


def bound_pods(count: int, nodes: int) -> list[dict[str, Any]]:
    rng = random.Random(1)
    return [pod_object(f"bound-{i:06d}", f"bound-uid-{i}", rng.randint(4, 28) * 64 * MI, i % 7 == 0,
                       node_name(rng.randrange(nodes))) for i in range(count)]


def pending_pod(i: int) -> dict[str, Any]:
    rng = random.Random(i)
    return pod_object(f"{PENDING_PREFIX}{i:06d}", f"pending-uid-{i}", rng.randint(1, 8) * 64 * MI, i % 5 == 0)


def seed_objects(nodes: str, pods: str, pending: str) -> list[dict[str, Any]]:
    """The fake API's content (called in its process): namespaces, nodes, bound and pending pods."""
    count = int(nodes)
    objects: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                                     for n in ("qosgate-system", *(f"team-{i}" for i in range(50)))]
    objects += [node_object(i) for i in range(count)]
    objects += bound_pods(int(pods), count)
    objects += [pending_pod(i) for i in range(int(pending))]
    return objects


# --- the client -------------------------------------------------------------------------------------------

def filter_bodies(names: list[str], sample: int, count: int) -> list[bytes]:
    """NodeNames-form arguments (kube-scheduler with nodeCacheCapable: true) for pods never bound."""
    rng = random.Random(sample)
    return [orjson.dumps({"Pod": pending_pod(10**6 + i), "Nodes": None, "NodeNames": rng.sample(names, sample)})
            for i in range(count)]


def binding_bodies(first: int, count: int, nodes: int) -> list[bytes]:
    bodies = []
    for i in range(first, first + count):
        meta = pending_pod(i)["metadata"]
        bodies.append(orjson.dumps({"PodName": meta["name"], "PodNamespace": meta["namespace"],
                                    "PodUID": meta["uid"], "Node": node_name(i * 7919 % nodes)}))
    return bodies


def side_by_side(label: str, null: Result, ours: Result, target: str = "") -> str:
    def ms(result: Result, p: float) -> str:
        return f"{result.percentile(p) * 1e3:7.2f}"

    errors = f"  errors {null.errors}/{ours.errors} {ours.statuses}" if null.errors or ours.errors else ""
    return (f"  {label:<28} {ms(null, 50)} {ms(null, 99)}   {ms(ours, 50)} {ms(ours, 99)} {ms(ours, 99.9)}   "
            f"{ours.throughput / null.throughput:5.2f}   {target}{errors}")


def simulate(args: argparse.Namespace, certs: Path, procs: dict[str, Proc], names: list[str]) -> list[str]:
    """kube-scheduler's loop through qosgate.simulate: filter → prioritize → asynchronous binds."""
    from qosgate.simulate.client import ExtenderClient
    from qosgate.simulate.driver import Simulator
    from qosgate.simulate.model import SimulationConfig

    config = SimulationConfig(nodes_per_filter=min(500, len(names)), bind_workers=args.bind_concurrency)
    first = args.bind_requests
    lines = []
    for label, proc in (("null extender", procs["null"]), ("qosgate extender", procs["qosgate"])):
        client = ExtenderClient(f"https://127.0.0.1:{proc.ports['extender']}", str(certs / "ca.crt"),
                                EXTENDER_HOSTNAME, cert_file=str(certs / "client.crt"),
                                key_file=str(certs / "client.key"))
        pods = [pending_pod(i) for i in range(first, first + args.sim_pods)]
        if label.startswith("qosgate"):
            first += args.sim_pods  # its binds are real: the next run needs fresh pods
        server_before, client_before = proc.cpu_seconds(), time.process_time()
        report = Simulator(None, client, dataclasses.replace(config)).schedule(pods, names)
        placed = max(len(report.placed), 1)
        server_cpu = (proc.cpu_seconds() - server_before) / placed
        client_cpu = (time.process_time() - client_before) / placed
        client.close()
        capacity = f"{1 / server_cpu:6.0f}" if server_cpu else "     ?"
        lines.append(f"  {label:<18} {report.pods_per_second:6.0f} pods/s end to end;  CPU/pod: extender "
                     f"{server_cpu * 1e3:5.2f} ms, simulator {client_cpu * 1e3:5.2f} ms;  extender-bound "
                     f"{capacity} pods/s  (placed {len(report.placed)}, errors {len(report.errors)})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=150_000, help="bound pods in the caches")
    parser.add_argument("--requests", type=int, default=2000, help="calls per 500-name case")
    parser.add_argument("--bind-requests", type=int, default=4000)
    parser.add_argument("--bind-concurrency", type=int, default=16)
    parser.add_argument("--sim-pods", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI): proves the benchmark works")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.pods, args.requests, args.bind_requests, args.sim_pods = 200, 2000, 100, 200, 100
    pending = args.bind_requests + 2 * args.sim_pods
    names = [node_name(i) for i in range(args.nodes)]
    small = min(500, args.nodes)
    results: list[tuple[str, Result, Result, str]] = []
    with tempfile.TemporaryDirectory() as tmp, processes() as stack, LoadGen(1) as load:
        work = Path(tmp)
        certs = make_certs(work / "certs")
        started = time.perf_counter()
        api = fake_api(work, "bench.bench_extender:seed_objects", str(args.nodes), str(args.pods), str(pending))
        stack.callback(api.stop)
        seeded = time.perf_counter() - started
        null = serve_null(certs, work, ["extender"])
        stack.callback(null.stop)
        qosgate = serve_qosgate("extender", certs, work, "--kubeconfig", api.info["kubeconfig"], ready_timeout=600)
        stack.callback(qosgate.stop)
        rss, peak = qosgate.rss_bytes(), qosgate.peak_rss_bytes()

        def target(proc: Proc) -> Target:
            return Target(proc.ports["extender"], str(certs / "ca.crt"), EXTENDER_HOSTNAME,
                          str(certs / "client.crt"), str(certs / "client.key"))

        ours, theirs = target(qosgate), target(null)
        status, answer = fetch(ours, "/filter", filter_bodies(names, small, 1)[0])
        assert status == 200 and b'"NodeNames"' in answer, answer[:300]
        cases = [(f"/filter NodeNames {small}", "/filter", filter_bodies(names, small, 32), args.requests,
                  "p99 <= 3 ms" if small == 500 else "")]
        if args.nodes > small:
            cases.append((f"/filter NodeNames {args.nodes}", "/filter", filter_bodies(names, args.nodes, 4),
                          max(20, args.requests // 4), "p99 <= 15 ms" if args.nodes == 5000 else ""))
        cases.append((f"/prioritize NodeNames {small}", "/prioritize", filter_bodies(names, small, 32),
                      args.requests, ""))
        for label, path, bodies, requests, goal in cases:
            for t in (theirs, ours):  # warm both, then measure back to back on the same bodies
                load.sequential(t, path, bodies, min(requests, 50))
            results.append((label, load.sequential(theirs, path, bodies, requests),
                            load.sequential(ours, path, bodies, requests), goal))
        bodies = binding_bodies(0, args.bind_requests, args.nodes)
        results.append((f"/bind ({args.bind_concurrency} in flight)",
                        load.closed(theirs, "/bind", bodies, connections=args.bind_concurrency,
                                    requests=args.bind_requests),
                        load.closed(ours, "/bind", bodies, connections=args.bind_concurrency,
                                    requests=args.bind_requests), "binds through the fake API"))
        simulated = simulate(args, certs, {"null": null, "qosgate": qosgate}, names)

    print(f"cluster: {args.nodes} nodes, {args.pods} bound pods (+{pending} pending) in the fake API (seeded in "
          f"{seeded:.1f}s); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"`qosgate serve extender`: start → ready (caches synced) {qosgate.ready_seconds:.1f} s (null extender "
          f"start → ready {null.ready_seconds:.1f} s); RSS after sync {rss / MI:.0f} MiB, peak {peak / MI:.0f} MiB")
    print(f"  {'(ms; one call at a time)':<28} {'null p50':>7} {'p99':>7}   {'qosgate':>7} {'p99':>7} {'p99.9':>7}   "
          "ratio   (ratio = qosgate/null throughput)")
    for label, null_result, our_result, goal in results:
        print(side_by_side(label, null_result, our_result, goal))
    print(f"scheduling throughput: {args.sim_pods} pods per run, filter {min(500, args.nodes)} names → prioritize → "
          f"bind ({args.bind_concurrency} in flight)")
    for line in simulated:
        print(line)

    table = Table("extender")
    table.add("initial sync (start → ready)", f"{qosgate.ready_seconds:.1f} s", None, "", None)
    table.add("extender RSS after sync", f"{rss / MI:.0f} MiB (peak {peak / MI:.0f})", None, "", None)
    for label, null_result, our_result, goal in [row for row in results if row[0].startswith("/filter")]:
        p99 = our_result.percentile(99) * 1e3
        limit = 3.0 if "<= 3" in goal else 15.0 if "<= 15" in goal else None
        table.add(f"{label} p99", f"{p99:.2f} ms (null {null_result.percentile(99) * 1e3:.2f})",
                  our_result.throughput / null_result.throughput, goal,
                  None if limit is None else p99 <= limit and not our_result.errors)
    table.print()


if __name__ == "__main__":
    main()
