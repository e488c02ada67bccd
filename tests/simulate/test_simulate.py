"""The scheduling simulator against the fake API, and the extender's acceptance run.

Acceptance (issue): 2,000 pods with random memory.min and classes onto 50 nodes, binds delayed and
reordered, the extender restarted mid-run (its state rebuilt from the API before it serves again), bindings
occasionally failing. After every step no node's summed memory.min of bound pods exceeds its protectable
memory; every pod that fits somewhere is eventually placed; pods that cannot fit get clear reasons.

"After every step" is checked by an independent watch of the API: every pod event updates a PodStore, and
the node the event touched is compared with its protectable memory there and then. Because the watch
replays the API's changes in order, that covers every state the API ever held, not just samples of it.
QOSGATE_SIM_PODS scales the acceptance run (default 2000) for local experiments.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qosgate.certs.generate import ensure_client_certificate, generate_certificates
from qosgate.cli.main import build_parser
from qosgate.cli.simulate import add_simulate_parser
from qosgate.core.nodefit import protectable
from qosgate.core.records import NodeRecord, PodRecord, node_record_from_raw
from qosgate.extender.app import extender_routes
from qosgate.extender.binder import KubeBinder
from qosgate.extender.state import ExtenderSettings, ExtenderState
from qosgate.kube.informer import ClusterCache, Informer
from qosgate.kube.store import PodStore
from qosgate.simulate.client import ExtenderClient
from qosgate.simulate.driver import Simulator
from qosgate.simulate.faults import FlakyBinder
from qosgate.simulate.model import MI, SimulationConfig, summarize_filter
from tests.extender.conftest import EXTENDER_HOSTNAME, EXTENDER_NAMESPACE, EXTENDER_SERVICE
from tests.extender.objects import make_node
from tests.fakeapi.server import FakeAPIServer
from tests.support.serving import serve_routes

PERCENT = 90
GOLD, SILVER = ("memory-qos", "gold"), ("memory-qos", "silver")


class RestartableExtender:
    """An extender served over HTTPS whose process-equivalent can be thrown away and rebuilt from the API."""

    def __init__(self, api: FakeAPIServer, cert_dir: Path, failure_rate: float = 0.0, seed: int = 0) -> None:
        self.api = api
        self.cert_dir = cert_dir
        self.failure_rate = failure_rate
        self.seed = seed
        self.restarts = 0
        self._stack = contextlib.ExitStack()
        self.client: ExtenderClient | None = None
        self.state: ExtenderState | None = None

    def start(self) -> ExtenderClient:
        client = self.api.kube_client()
        cache = ClusterCache(client, "annotated")
        cache.start()
        self._stack.callback(cache.stop)
        assert cache.wait_for_sync(60), "caches did not sync"  # rebuilt from the API before serving
        self.state = ExtenderState(cache.pods, cache.nodes, ExtenderSettings(protectable_percent=PERCENT))
        binder = FlakyBinder(KubeBinder(client), self.failure_rate, self.seed + self.restarts)
        routes = extender_routes(self.state, binder, lambda: cache.ready, client_certificate_required=True)
        port = self._stack.enter_context(serve_routes(routes, self.cert_dir,
                                                      client_ca_file=self.cert_dir / "ca.crt"))
        url = f"https://127.0.0.1:{port}"
        if self.client is None:
            cert, key = ensure_client_certificate(self.cert_dir)
            self.client = ExtenderClient(url, str(self.cert_dir / "ca.crt"), EXTENDER_HOSTNAME,
                                         cert_file=str(cert), key_file=str(key))
        else:
            self.client.set_url(url)
        return self.client

    def stop(self) -> None:
        # Graceful: the server finishes the requests in flight (binds included) before the caches stop. Idle
        # client connections are cut first so the server need not wait for them to time out.
        if self.client is not None:
            self.client.close()
        self._stack.close()
        self._stack = contextlib.ExitStack()

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()


class OvercommitWatch:
    """An independent watch of the API: checks the touched node after every pod event."""

    def __init__(self, api: FakeAPIServer, nodes: dict[str, NodeRecord]) -> None:
        self.store = PodStore("annotated")
        self.nodes = nodes
        self.violations: list[str] = []
        self.events = 0
        self.store.subscribe(self._check)
        self.informer = Informer(api.kube_client(), "/api/v1/pods", self.store, name="overcommit-watch")

    def _check(self, old: PodRecord | None, new: PodRecord | None) -> None:
        self.events += 1
        for record in (old, new):
            if record is None or not record.node_name:
                continue
            node = self.nodes[record.node_name]
            used = self.store.node_memory_min(record.node_name)
            if used > protectable(node, PERCENT):
                self.violations.append(f"{record.node_name}: {used} > {protectable(node, PERCENT)} after "
                                       f"{record.key}")

    def __enter__(self) -> OvercommitWatch:
        self.informer.start()
        assert self.informer.wait_for_sync(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.informer.stop()


def seed_nodes(api: FakeAPIServer, count: int, rng: random.Random) -> dict[str, NodeRecord]:
    raw = []
    for i in range(count):
        kind = rng.random()
        classes = None
        if kind < 0.3:
            classes = "memory-qos=gold:3,silver"  # gold capacity 3 per node
        elif kind < 0.4:
            classes = "memory-qos=silver"  # no gold here at all
        protectable_override = f"{rng.randint(6, 20)}Gi" if rng.random() < 0.2 else None
        raw.append(make_node(f"node-{i:02d}", f"{rng.choice((16, 24, 32))}Gi", classes=classes,
                             protectable=protectable_override))
    api.seed(raw)
    return {n["metadata"]["name"]: node_record_from_raw(n) for n in raw}


@pytest.fixture(scope="module")
def extender_cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_certificates(tmp_path_factory.mktemp("sim-certs"), EXTENDER_SERVICE,
                                 EXTENDER_NAMESPACE).directory


@pytest.fixture
def served_api() -> Iterator[FakeAPIServer]:
    # Bookmarks every 10 s: this test wants the watch traffic to be the pods themselves.
    with FakeAPIServer(bookmark_interval=10.0) as api:
        yield api


def test_acceptance_many_pods_restart_failures_never_overcommit(served_api: FakeAPIServer,
                                                                extender_cert_dir: Path) -> None:
    pods = int(os.environ.get("QOSGATE_SIM_PODS", "2000"))
    rng = random.Random(42)
    nodes = seed_nodes(served_api, 50, rng)
    extender = RestartableExtender(served_api, extender_cert_dir, failure_rate=0.03, seed=5)
    restarted_at: list[int] = []
    checked_steps = [0]

    with OvercommitWatch(served_api, nodes) as watch:
        client = extender.start()

        def on_step(step: int) -> None:
            checked_steps[0] += 1
            assert not watch.violations, watch.violations[:3]
            if step == pods // 2 and not restarted_at:
                extender.restart()
                restarted_at.append(step)
                simulator.capacity_changed()

        config = SimulationConfig(
            pods=pods, seed=7, min_memory_min=64 * MI, max_memory_min=1536 * MI, zero_fraction=0.1,
            classes=(GOLD, SILVER), class_fraction=0.25, bind_workers=16, bind_delay=0.01,
            bind_timeout_rate=0.01, bind_duplicate_rate=0.02, give_up_after=60)
        simulator = Simulator(served_api.kube_client(), client, config, on_step=on_step)
        try:
            report = simulator.run()
        finally:
            extender.stop()
            client.close()
        # Let the independent watch catch up with the last bindings before the final word.
        final_rv = served_api.resource_version
        deadline = threading.Event()
        for _ in range(500):
            if int(watch.informer.resource_version or 0) >= final_rv:
                break
            deadline.wait(0.02)

    assert restarted_at, "the extender was never restarted"
    assert watch.events >= pods  # the watch really saw the run
    assert watch.violations == []
    assert report.overcommitted == {}
    assert report.errors == {}, list(report.errors.items())[:3]
    assert report.missed == {}, report.missed  # every pod that fits somewhere was placed
    assert report.created == pods
    assert len(report.placed) + len(report.unschedulable) == pods
    assert len(report.placed) > pods // 2
    assert report.unschedulable, "the run should be big enough to fill the cluster"
    assert report.bind_failures > 0  # the failure paths really ran
    for reason in report.unschedulable.values():
        assert reason.startswith("0/50 nodes are available: ")
        assert "memory.min" in reason or "memory-qos" in reason
    assert served_api.server_errors == []


def test_small_run_places_everything_that_fits_and_explains_the_rest(fake_api: FakeAPIServer,
                                                                     extender_cert_dir: Path) -> None:
    fake_api.seed([make_node("small", "4Gi"), make_node("gold", "8Gi", classes="memory-qos=gold:1")])
    extender = RestartableExtender(fake_api, extender_cert_dir)
    client = extender.start()
    try:
        config = SimulationConfig(pods=12, seed=3, min_memory_min=MI * 1024, max_memory_min=MI * 1024,
                                  zero_fraction=0.0, classes=(GOLD,), class_fraction=0.5, bind_workers=4)
        report = Simulator(fake_api.kube_client(), client, config).run()
    finally:
        extender.stop()
    # 3Gi protectable on "small" + 7Gi on "gold" → at most 10 pods of 1Gi, and one gold pod in all.
    assert len(report.placed) <= 10 and report.missed == {} and report.overcommitted == {}
    gold_reasons = [r for r in report.unschedulable.values() if "memory-qos" in r]
    assert all("does not offer memory-qos" in r or "gold is full" in r or "memory.min" in r for r in gold_reasons)
    assert "placed" in report.render() and report.to_json()["placed"] == len(report.placed)


def test_summarize_filter_groups_reasons() -> None:
    result = {"FailedNodes": {"a": "memory.min 2Gi exceeds the free protectable memory",
                              "b": "memory.min 2Gi exceeds the free protectable memory",
                              "c": "memory-qos class gold is full"},
              "FailedAndUnresolvableNodes": {"d": "node does not offer memory-qos class gold"}}
    assert summarize_filter(result, 4) == (
        "0/4 nodes are available: 2 × memory.min 2Gi exceeds the free protectable memory; "
        "1 × node does not offer memory-qos class gold; "
        "1 × memory-qos class gold is full")


def test_cli_parser_and_run_against_the_fake_api(fake_api: FakeAPIServer, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.seed([make_node("n1", "8Gi"), make_node("n2", "8Gi")])
    kubeconfig = fake_api.write_kubeconfig(tmp_path / "kubeconfig")
    parser = build_parser()
    if not any(a.dest == "command" and "simulate" in (a.choices or {}) for a in parser._actions):
        import argparse

        parser = argparse.ArgumentParser()
        add_simulate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", "--kubeconfig", kubeconfig, "--pods", "20", "--max-memory-min", "2Gi",
                              "--classes", "memory-qos=gold", "--class-fraction", "0.3", "-o", "json"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert '"overcommitted": {}' in out and '"placed": ' in out
    # Created pods are cleaned up afterwards unless --keep-pods.
    assert [p for p in fake_api.objects("pods", "qosgate-sim")
            if p["metadata"].get("deletionTimestamp") is None] == []


def test_cli_rejects_bad_flags() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_simulate_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate", "--zero-fraction", "2"])
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate", "--classes", "gold"])
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate", "--min-memory-min", "lots"])
