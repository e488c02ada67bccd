"""Scheduling throughput of the real kube-scheduler with and without qosgate's extender (issue 12, item 5).

On the real control plane of tests/realcluster (etcd + kube-apiserver + kube-scheduler 1.37, no kubelet) with
N fake nodes (--nodes, default 500 and 2,000) and --pods pending pods (2,000), the same pods are scheduled by:

  (a) kube-scheduler alone (default profile);
  (b) kube-scheduler with qosgate's extender, filter + bind (manifests/scheduler/kube-scheduler-config.yaml
      without prioritizeVerb);
  (c) the same with prioritize too (the shipped configuration);
  (d) second-scheduler mode: the default scheduler for pods without a class and `qosgate-scheduler`
      (manifests/overlays/second-scheduler/kube-scheduler-config.yaml) for class pods.

The extender is `qosgate serve extender --leader-elect` × --extender-replicas (2, as shipped: followers
forward to the leader) behind a loopback Service, exactly as tests/realcluster/qosgate_stack.py runs it.
Pods are created while no scheduler runs (the annotations the webhook would write are computed with the
shipped catalog), then the variant's scheduler(s) start; pods/s = binds after the first / time from the
first to the last bind, observed on a pod watch. The same watch checks after every bind that no node's
Σ qosgate.io/memory-min exceeds its protectable memory (the overcommitted-node count must be 0 for b–d; for
(a) it shows what qosgate prevents). Nodes have 64 GiB allocatable but protect only ⌈1.25 × class pods /
nodes⌉ GiB (qosgate.io/protectable-memory), so class pods (1 GiB memory.min) fill them to about 80 %.

kube-scheduler's client QPS is raised to 5,000 in every variant (its default, 50, would cap (a) at ~50 binds/s;
scheduler_perf does the same). Extender latency per verb comes from its own histogram.

    python bench/bench_scheduler.py                 # 500 and 2,000 nodes, 2,000 pods (~10 min on 2 cores)
    python bench/bench_scheduler.py --smoke         # 40 nodes, 120 pods: proves it works (figures mean nothing)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qosgate.core.catalog import load_catalog_yaml
from qosgate.core.compile import compile_pod
from tests.realcluster.controlplane import BinariesUnavailable, ControlPlane, find_binaries, wait_until
from tests.realcluster.helpers import metric
from tests.realcluster.qosgate_stack import MANIFESTS, BindAuditor, QosgateStack

GI = 2**30
QPS = {"clientConnection": {"qps": 5000, "burst": 5000}}
SECOND = "qosgate-scheduler"
TOLERATE_NOT_READY = [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}]
VERBS = ("filter", "prioritize", "bind")


@dataclass
class Outcome:
    variant: str
    nodes: int
    pods: int
    seconds: float
    pods_per_second: float
    overcommitted_nodes: int
    extender_calls: dict[str, int]
    extender_mean_ms: dict[str, float]
    unbound: int
    cpu_ms_per_pod: dict[str, float]
    extender_connections: int  # TLS connections the extender replicas accepted (handshakes paid) in the run


# ----------------------------------------------------------------------------------------------- cluster


def catalog() -> Any:
    configmap = yaml.safe_load((MANIFESTS / "base" / "catalog-configmap.yaml").read_text())
    return load_catalog_yaml(configmap["data"]["catalog.yaml"], "manifests/base/catalog-configmap.yaml")


def create_nodes(cp: ControlPlane, start: int, count: int, protectable: int) -> None:
    """Nodes as a kubelet registers them: two requests each (create, status). The not-ready taint admission adds
    stays: pods tolerate it (no node lifecycle controller would lift it)."""
    resources = {"cpu": "64", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}

    def one(index: int) -> None:
        name = f"bench-node-{index:05d}"
        body = {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
                             "annotations": {"qosgate.io/protectable-memory": str(protectable)}}}
        with_retry(lambda: cp.api.post("/api/v1/nodes", json=body), (201, 409))
        status = {"status": {"capacity": resources, "allocatable": resources,
                             "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                             "message": "bench"}]}}
        with_retry(lambda: cp.api.patch(f"/api/v1/nodes/{name}/status", json=status,
                                        headers={"Content-Type": "application/merge-patch+json"}), (200,))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(start, start + count)))


def with_retry(call: Any, ok: tuple[int, ...], attempts: int = 20) -> httpx.Response:
    for _ in range(attempts):
        try:
            response = call()
            if response.status_code in ok:
                return response
            if response.status_code not in (429, 500, 503, 504):
                response.raise_for_status()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("request kept failing")


def pod_bodies(count: int, class_fraction: float, second: bool) -> list[dict[str, Any]]:
    """The same pods for every variant: 1 GiB requests; a `class_fraction` of them ask for gold (memory.min 1 GiB,
    annotations as the mutating webhook writes them). In second-scheduler mode class pods name qosgate-scheduler."""
    shipped = catalog()
    pods = []
    classes = round(count * class_fraction)
    for index in range(count):
        metadata: dict[str, Any] = {"name": f"p-{index:05d}", "labels": {"app": "bench"}}
        spec: dict[str, Any] = {"containers": [{"name": "app", "image": "registry.invalid/app:1",
                                                "resources": {"requests": {"cpu": "10m", "memory": "1Gi"}}}],
                                "tolerations": TOLERATE_NOT_READY}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
        # Spread class pods evenly through the list, so both schedulers of (d) work all along.
        if index * classes // count != (index + 1) * classes // count:
            metadata["annotations"] = {"qos-resources.qosgate.io": "memory-qos=gold"}
            metadata["annotations"].update(compile_pod(pod, shipped).annotations)
            if second:
                spec["schedulerName"] = SECOND
        pods.append(pod)
    return pods


def create_pods(cp: ControlPlane, namespace: str, pods: list[dict[str, Any]]) -> None:
    with cp.http(limits=httpx.Limits(max_connections=32)) as client:
        def one(pod: dict[str, Any]) -> None:
            with_retry(lambda: client.post(f"/api/v1/namespaces/{namespace}/pods", json=pod), (201, 409))

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(one, pods))


def delete_pods(cp: ControlPlane, namespace: str) -> None:
    cp.api.delete(f"/api/v1/namespaces/{namespace}/pods", params={"gracePeriodSeconds": "0"}, timeout=120)
    wait_until(lambda: not cp.api.get(f"/api/v1/namespaces/{namespace}/pods", params={"limit": "1"}).json()["items"],
               120, f"the pods of {namespace} to go")


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (its threads included) from /proc; 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def component_pids(cp: ControlPlane, stack: QosgateStack, schedulers: list[Any]) -> dict[str, list[int | None]]:
    pids: dict[str, list[int | None]] = {name: [pid] for name, pid in cp.pids().items()}
    pids["kube-scheduler"] = [s.pid for s in schedulers]
    pids["qosgate extender"] = [r.process.pid for r in stack.extenders]
    pids["loopback Service"] = [stack.extender_balancer.pid]
    pids["bench (pod watch)"] = [os.getpid()]
    return pids


def extender_histogram(stack: QosgateStack) -> dict[str, tuple[float, float]]:
    """verb → (count, sum of seconds) over every extender replica (a follower's count includes what it relayed);
    under the key "connections", (TLS connections accepted, 0)."""
    totals = {verb: [0.0, 0.0] for verb in (*VERBS, "connections")}
    for replica in stack.extenders:
        if not replica.process.running:
            continue
        text = replica.process.metrics()
        for verb in VERBS:
            totals[verb][0] += metric(text, "qosgate_extender_request_duration_seconds_count", verb=verb)
            totals[verb][1] += metric(text, "qosgate_extender_request_duration_seconds_sum", verb=verb)
        totals["connections"][0] += metric(text, "qosgate_http_connections_total", listener="extender")
    return {verb: (count, seconds) for verb, (count, seconds) in totals.items()}


# ----------------------------------------------------------------------------------------------- variants


def run_variant(cp: ControlPlane, stack: QosgateStack, variant: str, nodes: int, pods: list[dict[str, Any]],
                second_kubeconfig: Path, timeout: float, direct: bool) -> Outcome:
    namespace = cp.create_namespace(f"bench-{variant}")
    create_pods(cp, namespace, pods)
    before = extender_histogram(stack)
    auditor = BindAuditor(cp).start()
    schedulers = []
    if direct:
        leader = stack.wait_for_extender_leader()
        stack.extender_url_override = f"https://127.0.0.1:{leader.port}"
    try:
        if variant == "a":
            schedulers.append(cp.start_scheduler(QPS))
        elif variant in ("b", "c"):
            schedulers.append(cp.start_scheduler(stack.scheduler_config(prioritize=variant == "c", overrides=QPS)))
        else:
            schedulers.append(cp.start_scheduler(QPS))
            schedulers.append(cp.start_scheduler(stack.scheduler_config(second=True, overrides=QPS),
                                                 leader_elect=True, kubeconfig=second_kubeconfig))
        pids = component_pids(cp, stack, schedulers)
        cpu_before = {name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()}
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while auditor.binds < len(pods) and time.monotonic() < deadline:
            if auditor.binds != last:
                last, last_change = auditor.binds, time.monotonic()
            elif time.monotonic() - last_change > 30:
                break  # nothing bound for 30 s: what is left is unschedulable
            time.sleep(0.2)
        cpu = {name: sum(cpu_seconds(pid) for pid in group) - cpu_before[name] for name, group in pids.items()}
    finally:
        for scheduler in schedulers:
            scheduler.stop()
        auditor.stop()
    after = extender_histogram(stack)
    times = auditor.bind_times
    seconds = times[-1] - times[0] if len(times) > 1 else 0.0
    calls = {verb: int(after[verb][0] - before[verb][0]) for verb in VERBS}
    mean = {verb: 1000 * (after[verb][1] - before[verb][1]) / calls[verb] if calls[verb] else 0.0 for verb in VERBS}
    outcome = Outcome(variant, nodes, len(pods), seconds, (len(times) - 1) / seconds if seconds else 0.0,
                      len(auditor.overcommitted_nodes()), calls, mean, len(pods) - auditor.binds,
                      {name: 1000 * used / len(pods) for name, used in cpu.items()},
                      int(after["connections"][0] - before["connections"][0]))
    delete_pods(cp, namespace)
    return outcome


def print_table(results: list[Outcome], class_fraction: float, replicas: int, direct: bool) -> None:
    route = "kube-scheduler → leader directly" if direct else "kube-scheduler → loopback Service"
    print(f"\nkube-scheduler throughput, create → bound ({int(class_fraction * 100)} % class pods, "
          f"{replicas} extender replica(s), {route})")
    header = (f"{'nodes':>6} {'variant':<34} {'pods/s':>8} {'× (a)':>6} {'over-':>6} {'unbound':>7}  "
              f"{'extender calls (mean ms): filter / prioritize / bind':<52}")
    print(header)
    print(f"{'':>6} {'':<34} {'':>8} {'':>6} {'commit':>6}")
    names = {"a": "(a) kube-scheduler alone", "b": "(b) + extender filter, bind",
             "c": "(c) + extender filter, prioritize, bind", "d": "(d) second scheduler + default"}
    for nodes in sorted({r.nodes for r in results}):
        rows = [r for r in results if r.nodes == nodes]
        base = next((r.pods_per_second for r in rows if r.variant == "a"), 0.0)
        for r in rows:
            ratio = r.pods_per_second / base if base else 0.0
            calls = " / ".join(f"{r.extender_calls[v]} ({r.extender_mean_ms[v]:.2f})" for v in VERBS)
            print(f"{nodes:>6} {names[r.variant]:<34} {r.pods_per_second:>8.1f} {ratio:>6.2f} "
                  f"{r.overcommitted_nodes:>6} {r.unbound:>7}  {calls}")
    print("\nCPU per pod scheduled (ms; the machine has", os.cpu_count(), "cores shared by all of them)")
    components = sorted({name for r in results for name in r.cpu_ms_per_pod})
    print(f"{'nodes':>6} {'variant':<6} " + " ".join(f"{name:>18}" for name in components) + f" {'total':>8}")
    for r in results:
        print(f"{r.nodes:>6} ({r.variant})    " + " ".join(f"{r.cpu_ms_per_pod.get(name, 0):>18.2f}"
                                                    for name in components)
              + f" {sum(r.cpu_ms_per_pod.values()):>8.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--class-fraction", type=float, default=0.5,
                        help="share of pods asking for a class (default 0.5; the rest are plain pods)")
    parser.add_argument("--extender-replicas", type=int, default=2)
    parser.add_argument("--direct", action="store_true",
                        help="kube-scheduler calls the leader replica's port itself, not the loopback Service (no "
                             "userspace balancer hop, no follower relay)")
    parser.add_argument("--variants", default="abcd")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per variant")
    parser.add_argument("--smoke", action="store_true", help="40 nodes, 120 pods: proves the benchmark works")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.nodes, args.pods = [40], 120
    try:
        binaries = find_binaries()
    except BinariesUnavailable as error:
        print(f"bench_scheduler: skipped: {error}")
        return 1 if os.environ.get("QOSGATE_REQUIRE_REAL_CLUSTER") == "1" else 0

    results: list[Outcome] = []
    directory = Path(tempfile.mkdtemp(prefix="bench-scheduler-"))
    with ControlPlane(directory / "cp", binaries).start() as cp, \
            QosgateStack(cp, directory / "stack", webhook_replicas=0,
                         extender_replicas=args.extender_replicas).install() as stack:
        second_kubeconfig = stack.install_second_scheduler_rbac()
        created = 0
        for nodes in sorted(args.nodes):
            classes = round(args.pods * args.class_fraction)
            slots = max(1, math.ceil(1.25 * classes / nodes))
            started = time.monotonic()
            # Every node gets the same budget, recomputed for this size (earlier nodes are patched).
            for index in range(created):
                cp.api.patch(f"/api/v1/nodes/bench-node-{index:05d}", json={"metadata": {"annotations": {
                    "qosgate.io/protectable-memory": str(slots * GI)}}},
                    headers={"Content-Type": "application/merge-patch+json"})
            create_nodes(cp, created, nodes - created, slots * GI)
            created = nodes
            print(f"{nodes} nodes ready ({slots} GiB protectable each) in {time.monotonic() - started:.0f}s",
                  flush=True)
            for variant in args.variants:
                pods = pod_bodies(args.pods, args.class_fraction, second=variant == "d")
                outcome = run_variant(cp, stack, variant, nodes, pods, second_kubeconfig, args.timeout, args.direct)
                results.append(outcome)
                print(f"  ({variant}) {outcome.pods_per_second:.1f} pods/s, {outcome.overcommitted_nodes} "
                      f"overcommitted, {outcome.unbound} unbound, {outcome.extender_connections} TLS connections "
                      "accepted by the extender", flush=True)
    print_table(results, args.class_fraction, args.extender_replicas, args.direct)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
    failed = [r for r in results if r.variant != "a" and (r.overcommitted_nodes or r.unbound)]
    if failed:
        print(f"\nFAILED: overcommitted or unbound pods with qosgate: {[(r.nodes, r.variant) for r in failed]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
