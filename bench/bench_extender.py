"""Scheduler-extender latency and throughput at cluster scale, next to a null extender on the same stack.

A child process serves both apps on one uvicorn + TLS server (two ports): the qosgate extender over
watch caches holding --nodes nodes (5,000) and --pods bound pods (150,000) plus pending pods to bind, and
the null extender (same FastAPI shell and codec, no decisions). This process is the client, on the other
core. Printed, for null and qosgate side by side with their throughput ratio:

- /filter with NodeNames of 500 (the scheduler's default sample at 5,000 nodes) and of 5,000 names
  (percentageOfNodesToScore 100), and with the full `Nodes` form (every Node object in the body);
- /prioritize with 500 names;
- /bind with --bind-concurrency binds in flight. The binder is a stub that answers "bound" and feeds the
  bound pod back into the pod store as the watch would (--api-latency adds a simulated API round trip),
  so the figure is the extender's own cost: decode, re-check + reserve under the lock, settle, encode;
- scheduling throughput: qosgate.simulate.driver driving filter (500 names) → prioritize → asynchronous binds
  exactly as kube-scheduler does, in pods/s (target ≥ 700).

Targets: /filter p99 ≤ 3 ms with 500 names, ≤ 15 ms with 5,000.

    python bench/bench_extender.py                                   # full size
    python bench/bench_extender.py --nodes 500 --pods 15000 --smoke  # CI smoke
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.loadgen import Result, closed_loop
from qosgate.certs.generate import generate_certificates

HOSTNAME = "qosgate-extender.qosgate-system.svc"
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


# --- the server child -------------------------------------------------------------------------------------

class StubBinder:
    """Answers "bound" and shows the binding to the pod store at once, like an instant watch."""

    def __init__(self, pods: Any, latency: float) -> None:
        self.pods = pods
        self.latency = latency

    def bind(self, namespace: str, name: str, uid: str, node: str) -> Any:
        from qosgate.extender.state import BindOutcome, BindResult

        if self.latency:
            time.sleep(self.latency)
        if name.startswith(PENDING_PREFIX):
            pod = pending_pod(int(name[len(PENDING_PREFIX):]))
            pod["spec"]["nodeName"] = node
            pod["status"]["phase"] = "Running"
            self.pods.apply("MODIFIED", pod)
        return BindResult(BindOutcome.BOUND)


def serve(args: argparse.Namespace, cert_dir: str, port_file: str) -> None:
    from qosgate.extender.app import create_extender_app, create_null_extender_app
    from qosgate.extender.state import ExtenderSettings, ExtenderState
    from qosgate.kube.store import NodeStore, PodStore
    from qosgate.serving.tls import TLSServer

    started = time.perf_counter()
    nodes, pods = NodeStore(), PodStore("annotated")
    nodes.replace([node_object(i) for i in range(args.nodes)], "1")
    pods.replace(bound_pods(args.pods, args.nodes) + [pending_pod(i) for i in range(args.pending)], "2")
    state = ExtenderState(pods, nodes, ExtenderSettings())
    # 150,000 long-lived records: keep the cyclic GC from walking them on every collection (p99 spikes).
    gc.collect()
    gc.freeze()
    print(f"[server] caches: {args.nodes} nodes, {len(pods)} pods in {time.perf_counter() - started:.1f}s",
          file=sys.stderr)
    server = TLSServer([(create_null_extender_app(), 0),
                        (create_extender_app(state, StubBinder(pods, args.api_latency), lambda: True), 0)],
                       cert_dir, host="127.0.0.1", configure_logging=False, access_log=False, log_level="warning")
    ports = server.bind()
    with open(port_file + ".tmp", "w") as handle:
        handle.write(" ".join(map(str, ports)))
    os.replace(port_file + ".tmp", port_file)
    server.run()


# --- the client -------------------------------------------------------------------------------------------

def filter_bodies(names: list[str], sample: int, count: int, form: str = "NodeNames") -> list[bytes]:
    rng = random.Random(sample)
    bodies = []
    for i in range(count):
        pod = pending_pod(10**6 + i)  # never bound: filter does not reserve, any pod will do
        chosen = rng.sample(names, sample)
        if form == "Nodes":
            index = {n: j for j, n in enumerate(names)}
            args = {"Pod": pod, "Nodes": {"metadata": {}, "items": [node_object(index[n]) for n in chosen]},
                    "NodeNames": None}
        else:
            args = {"Pod": pod, "Nodes": None, "NodeNames": chosen}
        bodies.append(orjson.dumps(args))
    return bodies


def binding_bodies(first: int, count: int) -> list[bytes]:
    bodies = []
    for i in range(first, first + count):
        pod = pending_pod(i)
        meta = pod["metadata"]
        bodies.append(orjson.dumps({"PodName": meta["name"], "PodNamespace": meta["namespace"],
                                    "PodUID": meta["uid"], "Node": node_name(i % 997)}))
    return bodies


def line(label: str, null: Result, ours: Result, target: str = "") -> str:
    def ms(result: Result, p: float) -> str:
        return f"{result.percentile(p) * 1e3:7.2f}"

    ratio = ours.throughput / null.throughput if null.throughput else float("nan")
    errors = f"  errors {null.errors}/{ours.errors}" if null.errors or ours.errors else ""
    return (f"{label:<30} {ms(null, 50)} {ms(null, 99)}   {ms(ours, 50)} {ms(ours, 99)}   "
            f"{ratio:5.2f}   {target}{errors}")


async def latency(args: argparse.Namespace, ca_file: str, ports: list[int]) -> None:
    null_port, our_port = ports
    names = [node_name(i) for i in range(args.nodes)]
    small = min(500, args.nodes)
    cases = [
        (f"/filter NodeNames {small}", "/filter", filter_bodies(names, small, 32), args.requests,
         "p99 ≤ 3 ms" if small == 500 else ""),
        *([(f"/filter NodeNames {args.nodes}", "/filter", filter_bodies(names, args.nodes, 4),
            max(20, args.requests // 10), "p99 ≤ 15 ms" if args.nodes == 5000 else "")] if args.nodes > small else []),
        (f"/filter Nodes form {args.nodes}", "/filter", filter_bodies(names, args.nodes, 1, "Nodes"),
         args.nodes_form_requests, ""),
        (f"/prioritize NodeNames {small}", "/prioritize", filter_bodies(names, small, 32), args.requests, ""),
    ]
    print(f"{'':<30} {'null p50':>7} {'p99':>7}   {'qosgate':>7} {'p99':>7}   ratio   (ms; ratio = qosgate/null "
          "throughput)")
    for label, path, bodies, requests, target in cases:
        # Warm both servers, then measure null and qosgate back to back on the same bodies.
        for port in ports:
            await closed_loop(port, ca_file, HOSTNAME, path, bodies, 1, min(requests, 20))
        null = await closed_loop(null_port, ca_file, HOSTNAME, path, bodies, 1, requests)
        ours = await closed_loop(our_port, ca_file, HOSTNAME, path, bodies, 1, requests)
        print(line(label, null, ours, target))
    bodies = binding_bodies(0, args.bind_requests)
    null = await closed_loop(null_port, ca_file, HOSTNAME, "/bind", bodies, args.bind_concurrency,
                             args.bind_requests)
    ours = await closed_loop(our_port, ca_file, HOSTNAME, "/bind", bodies, args.bind_concurrency,
                             args.bind_requests)
    print(line(f"/bind ({args.bind_concurrency} in flight)", null, ours,
               f"api latency {args.api_latency * 1e3:.0f} ms" if args.api_latency else "stub API"))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux); 0.0 where unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def throughput(args: argparse.Namespace, ca_file: str, ports: list[int], server_pid: int) -> None:
    from qosgate.simulate.driver import ExtenderClient, SimulationConfig, Simulator

    names = [node_name(i) for i in range(args.nodes)]
    first = args.bind_requests
    pods = [pending_pod(i) for i in range(first, first + 2 * args.sim_pods)]
    config = SimulationConfig(nodes_per_filter=min(500, args.nodes), bind_workers=args.bind_concurrency)
    print(f"scheduling throughput: {args.sim_pods} pods per run, filter {config.nodes_per_filter} names → "
          "prioritize → "
          f"bind ({config.bind_workers} in flight); CPU ms per pod in each process, and the pods/s the "
          "extender process could sustain on one core of its own")
    runs = (("null extender", ports[0], True), ("qosgate extender", ports[1], True),
            ("qosgate, no prioritize", ports[1], False))
    offset = 0
    for label, port, prioritize in runs:
        client = ExtenderClient(f"https://127.0.0.1:{port}", ca_file, HOSTNAME)
        run_config = dataclasses.replace(config, prioritize=prioritize)
        # Fresh pending pods for each qosgate run (its binds are real to the caches); the null binds nothing.
        batch = pods[offset:offset + args.sim_pods]
        if port == ports[1]:
            offset += args.sim_pods
        server_before, client_before = cpu_seconds(server_pid), time.process_time()
        report = Simulator(None, client, run_config).schedule(batch, names)
        server_cpu = (cpu_seconds(server_pid) - server_before) / max(len(report.placed), 1)
        client_cpu = (time.process_time() - client_before) / max(len(report.placed), 1)
        client.close()
        capacity = f"{1 / server_cpu:6.0f}" if server_cpu else "     ?"
        target = "  (target ≥ 700 pods/s)" if port == ports[1] else ""
        print(f"  {label:<24} {report.pods_per_second:5.0f} pods/s end to end;  CPU/pod: extender "
              f"{server_cpu * 1e3:5.2f} ms, simulator {client_cpu * 1e3:5.2f} ms;  extender-bound "
              f"{capacity} pods/s{target}  (placed {len(report.placed)}, errors {len(report.errors)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=150_000, help="bound pods in the caches")
    parser.add_argument("--requests", type=int, default=2000, help="requests per 500-name case")
    parser.add_argument("--nodes-form-requests", type=int, default=20)
    parser.add_argument("--bind-requests", type=int, default=4000)
    parser.add_argument("--bind-concurrency", type=int, default=16)
    parser.add_argument("--sim-pods", type=int, default=3000)
    parser.add_argument("--api-latency", type=float, default=0.0, help="simulated binding POST latency (s)")
    parser.add_argument("--smoke", action="store_true", help="tiny request counts (CI)")
    parser.add_argument("--serve", nargs=2, metavar=("CERT_DIR", "PORT_FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--pending", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.nodes_form_requests, args.bind_requests, args.sim_pods = 100, 3, 200, 200
    if args.serve:
        serve(args, *args.serve)
        return
    pending = args.bind_requests + 2 * args.sim_pods
    with tempfile.TemporaryDirectory() as tmp:
        paths = generate_certificates(os.path.join(tmp, "certs"), "qosgate-extender", "qosgate-system")
        port_file = os.path.join(tmp, "ports")
        command = [sys.executable, os.path.abspath(__file__), "--serve", str(paths.directory), port_file,
                   "--nodes", str(args.nodes), "--pods", str(args.pods), "--pending", str(pending),
                   "--api-latency", str(args.api_latency)]
        child = subprocess.Popen(command)
        try:
            deadline = time.monotonic() + 600
            while not os.path.exists(port_file):
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit("benchmark server did not start")
                time.sleep(0.1)
            with open(port_file) as handle:
                ports = [int(p) for p in handle.read().split()]
            time.sleep(0.5)
            print(f"cluster: {args.nodes} nodes, {args.pods} bound pods cached; server and client on separate "
                  f"processes (cpus: {os.cpu_count()})")
            asyncio.run(latency(args, str(paths.ca_cert), ports))
            thread = threading.Thread(target=throughput, args=(args, str(paths.ca_cert), ports, child.pid))
            thread.start()
            thread.join()
        finally:
            child.terminate()
            child.wait(timeout=60)


if __name__ == "__main__":
    main()
