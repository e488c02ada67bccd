"""Preemption with the real kube-scheduler: its DefaultPreemption picks victims by priority and its own
resource model, then asks the extender (preemptVerb) whether removing them frees enough protectable memory.

One node per test with room for three pods (`pods: 3`, what kube-scheduler counts) and 2 GiB of protectable
memory (what qosgate counts); every gold pod asks 1 GiB, so two gold pods fill it for qosgate while a third
pod of any kind fills it for kube-scheduler. A high-priority gold pod then needs a victim:

- when kube-scheduler's lowest-priority pod is a gold one, the extender accepts that victim, the victim is
  deleted and the preemptor bound — with the node's Σ memory.min within its budget after every bind;
- when it is a plain pod (memory.min 0), its eviction would free a pod slot but no protectable memory, so
  the extender drops the node from the candidates: nothing is evicted, and the preemptor waits.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.realcluster.conftest import NodePool
from tests.realcluster.controlplane import ControlPlane, Scheduler, wait_until
from tests.realcluster.helpers import delete_pods, metric
from tests.realcluster.qosgate_stack import BindAuditor, QosgateStack, class_pod

GI = 2**30


@pytest.fixture(scope="module")
def scheduler(control_plane: ControlPlane, qosgate: QosgateStack) -> Iterator[Scheduler]:
    with control_plane.start_scheduler(qosgate.scheduler_config()) as running:
        yield running


@pytest.fixture(scope="module")
def priorities(control_plane: ControlPlane) -> Iterator[dict[str, str]]:
    """PriorityClass names for "low" (10), "mid" (20) and "high" (1000), unique to this run."""
    suffix = uuid.uuid4().hex[:6]
    names = {level: f"qosgate-test-{level}-{suffix}" for level in ("low", "mid", "high")}
    for level, value in (("low", 10), ("mid", 20), ("high", 1000)):
        control_plane.api.post("/apis/scheduling.k8s.io/v1/priorityclasses", json={
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": names[level]}, "value": value}).raise_for_status()
    yield names
    for name in names.values():
        control_plane.api.delete(f"/apis/scheduling.k8s.io/v1/priorityclasses/{name}")


def pod(pool: NodePool, name: str, klass: str | None, priority: str) -> dict[str, Any]:
    body = pool.pin(class_pod(name, klass, memory="1Gi"))
    body["spec"]["priorityClassName"] = priority
    body["spec"]["terminationGracePeriodSeconds"] = 0  # no kubelet: a victim must go at once
    return body


def preempt_calls(qosgate: QosgateStack) -> float:
    return sum(metric(replica.process.metrics(), "qosgate_extender_request_duration_seconds_count", verb="preempt")
               for replica in qosgate.extenders if replica.process.running)


def get_pod(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any] | None:
    response = cp.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return None if response.status_code == 404 else response.raise_for_status().json()


def fill(cp: ControlPlane, namespace: str, pool: NodePool, pods: list[dict[str, Any]]) -> None:
    for body in pods:
        cp.api.post(f"/api/v1/namespaces/{namespace}/pods", json=body).raise_for_status()
    wait_until(lambda: all((get_pod(cp, namespace, p["metadata"]["name"]) or {}).get("spec", {}).get("nodeName")
                           == pool.nodes[0] for p in pods), 60, "the pods filling the node to be bound")


def test_a_gold_victim_frees_its_protection_and_the_preemptor_takes_its_place(
        control_plane: ControlPlane, qosgate: QosgateStack, scheduler: Scheduler, node_pool: NodePool,
        priorities: dict[str, str]) -> None:
    cp = control_plane
    namespace = cp.create_namespace("preempt-gold")
    node_pool.add(1, pods=3, protectable="2Gi")
    try:
        with BindAuditor(cp) as audit:
            fill(cp, namespace, node_pool, [pod(node_pool, "gold-low", "gold", priorities["low"]),
                                            pod(node_pool, "gold-mid", "gold", priorities["mid"]),
                                            pod(node_pool, "plain-mid", None, priorities["mid"])])
            before = preempt_calls(qosgate)
            cp.api.post(f"/api/v1/namespaces/{namespace}/pods",
                        json=pod(node_pool, "urgent", "gold", priorities["high"])).raise_for_status()
            wait_until(lambda: (get_pod(cp, namespace, "urgent") or {}).get("spec", {}).get("nodeName"), 90,
                       "the high-priority gold pod to be bound after preemption")
            assert preempt_calls(qosgate) > before  # the extender was asked about the victims
            assert get_pod(cp, namespace, "gold-low") is None  # kube-scheduler's victim, accepted by qosgate
            for survivor in ("gold-mid", "plain-mid"):
                assert (get_pod(cp, namespace, survivor) or {}).get("spec", {}).get("nodeName") == node_pool.nodes[0]
        assert audit.violations == [], audit.violations
        assert audit.usage.get(node_pool.nodes[0]) == 2 * GI  # gold-mid + urgent: exactly the budget
    finally:
        delete_pods(cp, namespace)


def test_a_victim_that_frees_no_protection_is_refused_and_nothing_is_evicted(
        control_plane: ControlPlane, qosgate: QosgateStack, scheduler: Scheduler, node_pool: NodePool,
        priorities: dict[str, str]) -> None:
    cp = control_plane
    namespace = cp.create_namespace("preempt-plain")
    node_pool.add(1, pods=3, protectable="2Gi")
    try:
        with BindAuditor(cp) as audit:
            fill(cp, namespace, node_pool, [pod(node_pool, "gold-a", "gold", priorities["mid"]),
                                            pod(node_pool, "gold-b", "gold", priorities["mid"]),
                                            pod(node_pool, "plain-low", None, priorities["low"])])
            before = preempt_calls(qosgate)
            cp.api.post(f"/api/v1/namespaces/{namespace}/pods",
                        json=pod(node_pool, "urgent", "gold", priorities["high"])).raise_for_status()
            # kube-scheduler proposes plain-low (the lowest priority; its eviction makes room by pod count);
            # the extender answers that it frees no protectable memory.
            wait_until(lambda: preempt_calls(qosgate) > before, 90, "kube-scheduler to ask the extender to preempt")
            wait_until(lambda: any(c.get("type") == "PodScheduled" and c.get("status") == "False"
                                   for c in ((get_pod(cp, namespace, "urgent") or {}).get("status") or {})
                                   .get("conditions", [])), 60, "the preemptor to be reported unschedulable")
            time.sleep(3)  # time for a wrongly accepted preemption to delete its victim
            plain = get_pod(cp, namespace, "plain-low")
            assert plain is not None and not plain["metadata"].get("deletionTimestamp"), "evicted for nothing"
            urgent = get_pod(cp, namespace, "urgent") or {}
            assert not urgent.get("spec", {}).get("nodeName")
            assert not (urgent.get("status") or {}).get("nominatedNodeName")
        assert audit.violations == [], audit.violations
        assert audit.usage.get(node_pool.nodes[0]) == 2 * GI
    finally:
        delete_pods(cp, namespace)
