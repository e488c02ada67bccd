"""The extender under kube-scheduler while its replicas come and go: the leader stopped gracefully (Lease
released), restarted, and SIGKILLed (Lease left to expire) in the middle of scheduling waves. A watch checks,
after every bind, that no node's Σ memory.min exceeds its protectable memory.

The interruption itself is measured under a steady stream of class pods: from the leader's SIGTERM (what a
rolling update or a drain of its node sends) or SIGKILL (a crash) to the next successful bind. The figures
land in the "real control plane figures" section of the pytest summary; only that scheduling resumes is
asserted (speed targets live in bench/). For the crash, the Service is as strict as a cluster's: the dead
replica stays among the endpoints until the Deployment's readiness probe (period × failure threshold, read
from manifests/base) has failed, and a connection dealt to it is refused, not retried elsewhere.

Four nodes with room for exactly five 256 MiB gold pods each (qosgate.io/protectable-memory) and 64 GiB of
allocatable memory, so kube-scheduler alone would put far more on each: only the extender keeps them apart.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from tests.realcluster.balancer import Probing
from tests.realcluster.conftest import NodePool
from tests.realcluster.controlplane import ControlPlane, Scheduler, wait_until
from tests.realcluster.helpers import FIGURES, delete_pods
from tests.realcluster.qosgate_stack import BindAuditor, QosgateStack, class_pod, quota_configmap

NODES, SLOTS, POD_MI = 4, 5, 256
WAVE = 6


@pytest.fixture(scope="module")
def scheduler(control_plane: ControlPlane, qosgate: QosgateStack) -> Iterator[Scheduler]:
    with control_plane.start_scheduler(qosgate.scheduler_config()) as running:
        yield running


def shipped_probing(qosgate: QosgateStack) -> Probing:
    """How a cluster keeps the extender Service's endpoints: the Deployment's readiness probe, and kube-proxy
    dealing each connection to one endpoint."""
    (container,) = qosgate.rendered("Deployment", "qosgate-extender")["spec"]["template"]["spec"]["containers"]
    probe = container["readinessProbe"]
    return Probing(period=float(probe["periodSeconds"]), failure_threshold=int(probe["failureThreshold"]),
                   retry_refused=False)


def pending(control_plane: ControlPlane, namespace: str) -> list[dict]:
    items = control_plane.api.get(f"/api/v1/namespaces/{namespace}/pods").json()["items"]
    return [p for p in items if not p["spec"].get("nodeName")]


def test_leader_handovers_and_restarts_mid_run_never_overcommit_a_node(
        control_plane: ControlPlane, qosgate: QosgateStack, scheduler: Scheduler, node_pool: NodePool) -> None:
    namespace = control_plane.create_namespace("ha")
    control_plane.api.post(f"/api/v1/namespaces/{namespace}/configmaps",
                           json=quota_configmap("quota", 100)).raise_for_status()  # the default allows 10 gold
    node_pool.add(NODES, memory="64Gi", protectable=f"{SLOTS * POD_MI}Mi")
    created = 0

    def wave() -> None:
        nonlocal created
        for _ in range(WAVE):
            pod = node_pool.pin(class_pod(f"gold-{created}", "gold", memory=f"{POD_MI}Mi"))
            control_plane.api.post(f"/api/v1/namespaces/{namespace}/pods", json=pod).raise_for_status()
            created += 1

    def leader_index() -> int:
        leader = qosgate.wait_for_extender_leader(60)
        return qosgate.extenders.index(leader)

    try:
        with BindAuditor(control_plane) as audit:
            wave()
            audit.wait_for_binds(WAVE, 60)

            # 1. graceful stop of the leader while a wave is being scheduled: it releases the Lease.
            first = leader_index()
            wave()
            qosgate.extenders[first].process.terminate()
            qosgate.sync_balancers()
            qosgate.wait_for_extender_leader(60)
            audit.wait_for_binds(2 * WAVE, 90)
            qosgate.start_extender(first)  # back as a follower

            # 2. SIGKILL of the leader mid-wave: its Lease must expire before anyone decides again.
            second = leader_index()
            wave()
            qosgate.extenders[second].process.kill()
            qosgate.sync_balancers()
            qosgate.wait_for_extender_leader(60)
            audit.wait_for_binds(3 * WAVE, 90)
            qosgate.start_extender(second)

            # 3. a last wave beyond what the nodes can protect.
            wave()
            audit.wait_for_binds(NODES * SLOTS, 90)
            qosgate.wait_for_extender_leader(60)
            # The pods left over are refused by the filter for want of protectable memory, not placed.
            leftover = wait_until(
                lambda: [p for p in pending(control_plane, namespace)
                         if any("exceeds the free protectable memory" in (c.get("message") or "")
                                for c in p.get("status", {}).get("conditions", []))]
                if len(pending(control_plane, namespace)) == created - NODES * SLOTS else None,
                60, "the pods beyond capacity to be reported unschedulable by qosgate's filter")
            assert len(leftover) == created - NODES * SLOTS

        assert audit.violations == [], audit.violations
        assert audit.binds == NODES * SLOTS
        assert {node: audit.usage.get(node) for node in node_pool.nodes} == \
            {node: SLOTS * POD_MI * 2**20 for node in node_pool.nodes}
        assert audit.errors == []
    finally:
        delete_pods(control_plane, namespace)
        for index, replica in enumerate(qosgate.extenders):
            if not replica.process.running:
                qosgate.start_extender(index)
        qosgate.wait_for_extender_leader(60)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_scheduling_resumes_within_seconds_when_the_leader_goes(
        control_plane: ControlPlane, qosgate: QosgateStack, scheduler: Scheduler, node_pool: NodePool,
        how: str) -> None:
    cp = control_plane
    namespace = cp.create_namespace(f"failover-{how.lower()}")
    cp.api.post(f"/api/v1/namespaces/{namespace}/configmaps", json=quota_configmap("quota", 1000)).raise_for_status()
    node_pool.add(2, memory="64Gi", protectable="64Gi")
    stop = threading.Event()
    failures: list[str] = []

    def feed() -> None:  # a steady stream of class pods, one every 50 ms, like a busy cluster
        with cp.http() as client:
            index = 0
            while not stop.is_set():
                body = node_pool.pin(class_pod(f"s-{index}", "gold", memory="16Mi"))
                response = client.post(f"/api/v1/namespaces/{namespace}/pods", json=body)
                if response.status_code != 201 and response.status_code != 503:  # 503: retried by controllers
                    failures.append(f"{response.status_code} {response.text[:200]}")
                index += 1
                time.sleep(0.05)

    feeder = threading.Thread(target=feed, name="pod-feed", daemon=True)
    gone = -1
    try:
        with BindAuditor(cp) as audit:
            feeder.start()
            audit.wait_for_binds(20, 60)  # steady state
            leader = qosgate.wait_for_extender_leader(60, poke=False)
            gone = qosgate.extenders.index(leader)
            if how == "SIGKILL":
                qosgate.extender_balancer.set_backends(qosgate.extender_backends(), shipped_probing(qosgate))
                qosgate.extender_balancer.probe_now()
            went = time.monotonic()
            if how == "SIGTERM":
                # A deleted pod leaves the endpoints at once (it is terminating); its drain finishes the calls
                # in flight. Here its failing /readyz drops it within one fast probe.
                leader.process.signal(signal.SIGTERM)
                qosgate.sync_balancers()
            else:
                leader.process.kill()  # a crash: it stays an endpoint until its readiness probe fails
            wait_until(lambda: any(t > went for t in audit.bind_times), 90, f"a bind after the leader's {how}")
            interruption = min(t for t in audit.bind_times if t > went) - went
            binds_before = sum(1 for t in audit.bind_times if t <= went)
            wait_until(lambda: not leader.process.running, 30, "the old leader to exit")
            exited = time.monotonic()
            # The new leader has to keep binding, not only the old one finishing what it had in flight.
            wait_until(lambda: sum(1 for t in audit.bind_times if t > exited) >= 20, 90,
                       "20 binds after the old leader exited")
            stop.set()
            feeder.join(10)
            window = [went, *(t for t in audit.bind_times if t > went)]
            longest = max(later - earlier for earlier, later in itertools.pairwise(window))
        endpoints = ("endpoints as a cluster keeps them" if how == "SIGKILL"
                     else "the terminating pod out of the endpoints at once")
        FIGURES.append(f"extender leader {how} under a steady stream (20 pods/s, 2 replicas, 5 s lease, {endpoints}): "
                       f"next bind after {interruption:.2f} s, longest gap between binds {longest:.2f} s "
                       f"({binds_before} binds before)")
        assert audit.violations == [], audit.violations
        assert failures == [], failures[:3]
    finally:
        stop.set()
        delete_pods(cp, namespace)
        if gone >= 0 and not qosgate.extenders[gone].process.running:
            qosgate.start_extender(gone)
        qosgate.sync_balancers()
        qosgate.wait_for_extender_leader(60)
