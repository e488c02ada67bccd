"""A new extender leader serves only after its pod cache caught up with the API as of winning the Lease."""

from __future__ import annotations

import logging

from qosgate.kube.kubeconfig import ClientConfig
from qosgate.kube.leader import CatchUpBarrier
from qosgate.kube.store import PodStore
from qosgate.kube.transport import KubeClient
from tests.support.processes import free_port
from tests.support.tls import eventually


def test_barrier_opens_only_when_the_pod_cache_reaches_the_api_revision(fake_api):
    fake_api.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}])
    pods = PodStore()
    pods.replace([], "1")  # an old revision: binds made by the previous leader are not seen yet
    barrier = CatchUpBarrier(fake_api.kube_client(), lambda: pods.resource_version, poll=0.01)
    barrier.on_started_leading()
    assert not barrier.open
    pods.replace([], str(fake_api.resource_version))
    eventually(lambda: barrier.open, timeout=30)


def test_losing_the_lease_closes_the_barrier_and_abandons_the_wait(fake_api):
    pods = PodStore()
    pods.replace([], "1")
    barrier = CatchUpBarrier(fake_api.kube_client(), lambda: pods.resource_version, poll=0.01)
    fake_api.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}])
    barrier.on_started_leading()
    barrier.on_stopped_leading()
    pods.replace([], str(fake_api.resource_version))
    assert not barrier.open


def test_an_unreachable_api_still_opens_after_the_bound_with_a_log_line(caplog):
    caplog.set_level(logging.INFO, logger="qosgate.kube.leader")
    dead = KubeClient(ClientConfig(server=f"http://127.0.0.1:{free_port()}"))  # nothing listens there
    pods = PodStore()
    barrier = CatchUpBarrier(dead, lambda: pods.resource_version, max_wait=0.5, poll=0.01)
    barrier.on_started_leading()
    eventually(lambda: barrier.open, timeout=30)
    assert "without the watch passing the API's revision" in caplog.text
