"""Benchmark the ClusterCache against the fake API server over loopback HTTP, and print the figures.

    python bench/bench_cache_sync.py                      # 150,000 pods on 5,000 nodes (targets below)
    python bench/bench_cache_sync.py --pods 5000 --nodes 200 --events 2000    # CI smoke run

The fake API server runs in this (parent) process; the cache runs in a fresh child process so its RSS
figures contain nothing but the interpreter, the client and the stores. Figures printed:

* initial sync: ClusterCache start → ready (paginated LIST of pods + nodes)     target ≤ 10 s at 150k pods
* store memory: RSS after sync − RSS before (after gc), plus the peak (VmHWM)  target ≤ 200 MB at 150k pods
                and the Python heap the stores hold, per tracemalloc (optional, --tracemalloc, slower)
* apply cost:   µs per MODIFIED event applied straight to the PodStore (raw dict → record → aggregates)
* watch rate:   MODIFIED events/s delivered by the watch into the store, end to end (server included)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# --- realistic objects ----------------------------------------------------------------------------------
def _containers(workload: str, rng: random.Random) -> list[dict[str, Any]]:
    mem = rng.choice(["128Mi", "256Mi", "512Mi", "1Gi", "2Gi"])
    return [
        {"name": "app", "image": f"registry.example.com/{workload}:1.{rng.randint(0, 40)}.0",
         "imagePullPolicy": "IfNotPresent",
         "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
         "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "WORKLOAD", "value": workload},
                 {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
         "resources": {"requests": {"cpu": "250m", "memory": mem}, "limits": {"memory": mem}},
         "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                           "readOnly": True}],
         "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                           "periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3},
         "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"},
        {"name": "proxy", "image": "registry.example.com/proxy:4.5.1", "imagePullPolicy": "IfNotPresent",
         "args": ["--listen=:15001", "--upstream=127.0.0.1:8080"],
         "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}},
         "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"},
    ]


def make_nodes(count: int) -> list[dict[str, Any]]:
    nodes = []
    for i in range(count):
        name = f"node-{i:05d}"
        annotations = {"node.alpha.kubernetes.io/ttl": "0"}
        if i % 4 == 0:
            annotations["qosgate.io/qos-classes"] = "memory-qos=gold:40,silver,bronze"
        nodes.append({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                  "topology.kubernetes.io/zone": f"zone-{i % 3}"},
                         "annotations": annotations},
            "spec": {"podCIDR": f"10.{i // 256}.{i % 256}.0/24"},
            "status": {"allocatable": {"cpu": "31500m", "memory": "125Gi", "pods": "110"},
                       "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        })
    return nodes


def make_pods(count: int, nodes: int, namespaces: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    workloads = [(f"ns-{w % namespaces:04d}", f"svc-{w:05d}") for w in range(max(1, count // 30))]
    # Pods of one workload share their spec sub-objects, as replicas do; the fake never mutates stored
    # objects and the wire JSON is the same, so this only saves the parent's memory.
    templates = {w: _containers(w[1], rng) for w in workloads}
    classes = ["gold", "silver", "bronze"]
    pods = []
    for i in range(count):
        ns, workload = workloads[i % len(workloads)]
        name = f"{workload}-{uuid.UUID(int=rng.getrandbits(128)).hex[:10]}"
        klass = classes[hash(workload) % 3]
        annotations = {
            "qos-resources.qosgate.io": f"memory-qos={klass}",
            "qosgate.io/memory-min": str(rng.choice([0, 128, 256, 512]) * 2**20),
            "qosgate.io/resolved": f"memory-qos={klass}",
            "kubernetes.io/config.seen": "2026-01-01T00:00:00.000000000Z",
        }
        if i % 7 == 0:
            annotations["qos-resources.qosgate.io/proxy"] = "memory-qos=bronze"
        node = f"node-{i % nodes:05d}"
        pods.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": ns, "uid": str(uuid.UUID(int=rng.getrandbits(128))),
                "labels": {"app": workload, "pod-template-hash": "7d9f8c6b5"},
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{workload}-7d9f8c6b5",
                                     "uid": "5a1e0c9e-0000-4000-8000-000000000001", "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "spec": {"containers": templates[(ns, workload)], "nodeName": node, "schedulerName": "default-scheduler",
                     "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                     "serviceAccountName": "default", "priority": 0, "enableServiceLinks": True,
                     "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                      "effect": "NoExecute", "tolerationSeconds": 300}]},
            "status": {"phase": "Running", "qosClass": "Burstable", "hostIP": "10.0.0.1",
                       "podIP": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                       "startTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                                      for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
                       "containerStatuses": [{"name": c, "ready": True, "restartCount": 0, "started": True,
                                              "image": "registry.example.com/x", "imageID": "sha256:abc",
                                              "containerID": f"containerd://{i:064x}",
                                              "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
                                             for c in ("app", "proxy")]},
        })
    return pods


# --- child: the cache under test ------------------------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    import tracemalloc

    from qosgate.kube.config import load_api_client
    from qosgate.kube.informer import ClusterCache
    from qosgate.kube.store import PodStore

    client = load_api_client(args.kubeconfig)
    gc.collect()
    rss_before = rss_bytes()
    if args.tracemalloc:
        tracemalloc.start()
    cache = ClusterCache(client, "annotated", watch_nodes=True, page_size=args.page_size)
    started = time.perf_counter()
    cpu_started = time.process_time()
    cache.start()
    if not cache.wait_for_sync(600):
        raise SystemExit(f"cache did not sync: {cache.stats()}")
    sync_seconds = time.perf_counter() - started
    sync_cpu = time.process_time() - cpu_started
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] if args.tracemalloc else None
    if args.tracemalloc:
        tracemalloc.stop()
    result: dict[str, Any] = {
        "pods": len(cache.pods), "nodes": len(cache.nodes), "sync_seconds": sync_seconds, "sync_cpu": sync_cpu,
        "rss_delta": rss_bytes() - rss_before, "peak_rss": peak_rss_bytes(), "rss_before": rss_before,
        "traced_heap": heap,
    }
    print("SYNCED " + json.dumps(result), flush=True)

    # Watch throughput: the parent re-seeds `events` existing pods (each a MODIFIED event) after "go".
    line = sys.stdin.readline()
    if line.strip() == "go":
        events_before = cache.pod_informer.events
        first_change: list[float] = []
        # The clock starts at the first delivered event: this measures the stream, not the parent's seeding.
        def first(_old: object, _new: object) -> None:
            if not first_change:
                first_change.append(time.perf_counter())

        cache.pods.subscribe(first)
        target_rv = int(sys.stdin.readline())  # the parent has seeded every change by now
        deadline = time.monotonic() + 600
        while int(cache.pod_informer.resource_version or 0) < target_rv and time.monotonic() < deadline:
            time.sleep(0.0005)
        watch_seconds = time.perf_counter() - first_change[0]
        result["watch_events"] = cache.pod_informer.events - events_before
        result["watch_seconds"] = watch_seconds
    cache.stop()

    # Per-event apply cost, without any I/O: MODIFIED events for pods the store already holds.
    pods = make_pods(min(args.pods, 20000), args.nodes, args.namespaces, seed=2)
    store = PodStore("annotated")
    store.replace(pods, "1")
    for pod in pods:
        pod["metadata"]["annotations"] = {**pod["metadata"]["annotations"], "qosgate.io/memory-min": "1048576"}
    started = time.perf_counter()
    for pod in pods:
        store.apply("MODIFIED", pod)
    result["apply_us"] = (time.perf_counter() - started) / len(pods) * 1e6
    print("RESULT " + json.dumps(result), flush=True)


# --- parent: the fake API server and the report -----------------------------------------------------------
def parent(args: argparse.Namespace) -> None:
    from tests.fakeapi import FakeAPIServer

    print(f"generating {args.pods} pods on {args.nodes} nodes in {args.namespaces} namespaces …", flush=True)
    nodes = make_nodes(args.nodes)
    pods = make_pods(args.pods, args.nodes, args.namespaces)
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{i:04d}"}}
                  for i in range(args.namespaces)]
    wire = len(json.dumps(pods[0]))
    with FakeAPIServer() as api, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        api.seed(namespaces)
        api.seed(nodes)
        api.seed(pods)
        print(f"seeded in {time.perf_counter() - started:.1f}s (pod JSON ≈ {wire} bytes each)", flush=True)
        kubeconfig = api.write_kubeconfig(str(Path(tmp) / "kubeconfig"), token="admin")
        command = [sys.executable, __file__, "--child", "--kubeconfig", kubeconfig, "--pods", str(args.pods),
                   "--nodes", str(args.nodes), "--namespaces", str(args.namespaces),
                   "--page-size", str(args.page_size)]
        if args.tracemalloc:
            command.append("--tracemalloc")
        server_cpu = time.process_time()
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        synced = None
        for line in proc.stdout:
            if line.startswith("SYNCED "):
                synced = json.loads(line[7:])
                break
            print(line, end="")
        if synced is None:
            raise SystemExit(f"child failed (exit {proc.wait()})")
        server_cpu = time.process_time() - server_cpu
        # Watch throughput: MODIFIED events for `events` existing pods.
        rng = random.Random(3)
        changed = []
        for pod in rng.sample(pods, min(args.events, len(pods))):
            changed.append({**pod, "metadata": {**pod["metadata"], "annotations": {
                **pod["metadata"]["annotations"], "qosgate.io/memory-min": str(rng.randint(1, 9) * 2**20)}}})
        proc.stdin.write("go\n")
        proc.stdin.flush()
        target_rv = api.seed(changed) if changed else 0
        proc.stdin.write(f"{target_rv}\n")
        proc.stdin.flush()
        result = None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
            else:
                print(line, end="")
        proc.wait()
    if result is None:
        raise SystemExit("child did not report")
    result["server_cpu"] = server_cpu
    report(args, result)


def report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    mb = 2**20
    print()
    load = os.getloadavg()[0]
    print(f"ClusterCache over HTTP: {r['pods']} pods, {r['nodes']} nodes (page size {args.page_size}; "
          f"load average {load:.1f} on {os.cpu_count()} CPUs)")
    print(f"  initial sync        {r['sync_seconds']:8.2f} s     ({r['pods'] / r['sync_seconds']:,.0f} pods/s; "
          f"target ≤ 10 s at 150k)")
    print(f"  client CPU in sync  {r['sync_cpu']:8.2f} s     (all threads of the cache process; the rest is "
          f"waiting for the server)")
    print(f"  fake server CPU     {r['server_cpu']:8.2f} s     (the test server's own cost while serving the LISTs)")
    # Includes ~20 MB that does not grow with the pod count (freed page buffers the allocator keeps, threads,
    # connections), so B/pod is only meaningful at full scale.
    print(f"  store RSS delta     {r['rss_delta'] / mb:8.1f} MB    ({r['rss_delta'] / max(1, r['pods']):,.0f} B/pod "
          f"incl. fixed overhead; target ≤ 200 MB at 150k)")
    print(f"  peak RSS (process)  {r['peak_rss'] / mb:8.1f} MB    (interpreter + client before sync: "
          f"{r['rss_before'] / mb:.1f} MB)")
    if r.get("traced_heap") is not None:
        print(f"  traced Python heap  {r['traced_heap'] / mb:8.1f} MB    (tracemalloc, after sync)")
    print(f"  apply MODIFIED      {r['apply_us']:8.1f} µs/event (raw dict → record → aggregates, no I/O)")
    if r.get("watch_events"):
        print(f"  watch throughput    {r['watch_events'] / r['watch_seconds']:8,.0f} events/s "
              f"({r['watch_events']} MODIFIED events in {r['watch_seconds']:.2f} s, server included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--nodes", type=int, default=5_000)
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--events", type=int, default=20_000, help="MODIFIED events for the watch throughput")
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--tracemalloc", action="store_true", help="also trace the Python heap (slows the sync)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
