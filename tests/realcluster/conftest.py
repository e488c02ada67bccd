"""pytest wiring for the real control plane: the `real_cluster` marker and the session fixtures.

- `control_plane`: a started `tests.realcluster.controlplane.ControlPlane` (etcd + kube-apiserver) shared by the
  whole session; tests start kube-scheduler themselves (`control_plane.start_scheduler(...)`, a context manager).
- `qosgate`: qosgate installed on it from manifests/base (`tests.realcluster.qosgate_stack.QosgateStack`: 3 webhook
  and 2 extender `qosgate serve` processes as their ServiceAccounts behind loopback Services, webhook
  configurations registered). Shared too: a test that stops a replica or edits the catalog restores it.
- `node_pool`: labelled Nodes for one test, deleted afterwards (pin pods with `node_pool.pin(pod)`).

Tests using `control_plane` or `qosgate` are marked `real_cluster` automatically. Without binaries (no
$QOSGATE_CONTROL_PLANE_BIN and no `go` to build them) those tests are skipped, or fail when
QOSGATE_REQUIRE_REAL_CLUSTER=1. Logs: <pytest tmp>/control-plane*/logs/ (one file per process).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.realcluster.controlplane import BinariesUnavailable, ControlPlane, find_binaries
from tests.realcluster.helpers import FIGURES
from tests.realcluster.qosgate_stack import PARKED, QosgateStack

MARKER = "real_cluster: runs real etcd/kube-apiserver/kube-scheduler processes (tests/realcluster)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("real control plane figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"control_plane", "qosgate"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_cluster)


def _unavailable(reason: str) -> None:
    if os.environ.get("QOSGATE_REQUIRE_REAL_CLUSTER") == "1":
        pytest.fail(f"QOSGATE_REQUIRE_REAL_CLUSTER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    directory = tmp_path_factory.mktemp("control-plane")
    try:
        binaries = find_binaries(directory / "logs" / "build.log")
    except BinariesUnavailable as error:
        _unavailable(f"real control plane unavailable: {error}")
    with ControlPlane(directory, binaries).start() as cp:
        yield cp


@pytest.fixture(scope="session")
def qosgate(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QosgateStack]:
    """qosgate installed from manifests/base on the session's control plane: 3 webhook replicas and 2 extender
    replicas (`qosgate serve`, as their ServiceAccounts) behind loopback balancers, webhook configurations
    registered (tests/realcluster/qosgate_stack.py). Tests that stop replicas restore them."""
    with QosgateStack(control_plane, tmp_path_factory.mktemp("qosgate")) as stack:
        stack.install()
        yield stack


class NodePool:
    """Nodes created for one test, labelled `qosgate-test/pool=<name>` (pods select them with
    `selector`); deleted at teardown so other tests' schedulers never see them."""

    LABEL = "qosgate-test/pool"

    def __init__(self, control_plane: ControlPlane, name: str):
        self.cp, self.name = control_plane, name
        self.nodes: list[str] = []

    @property
    def selector(self) -> dict[str, str]:
        return {self.LABEL: self.name}

    def add(self, count: int = 1, *, memory: str = "64Gi", protectable: str | None = None, cpu: str = "64",
            pods: int = 250, annotations: dict[str, str] | None = None) -> list[str]:
        names = []
        for _ in range(count):
            name = f"{self.name}-{len(self.nodes)}"
            self.cp.create_node(name, cpu=cpu, memory=memory, pods=pods, labels=self.selector)
            notes = dict(annotations or {})
            if protectable is not None:
                notes["qosgate.io/protectable-memory"] = protectable
            if notes:
                self.cp.api.patch(f"/api/v1/nodes/{name}", json={"metadata": {"annotations": notes}},
                                  headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
            self.nodes.append(name)
            names.append(name)
        return names

    def pin(self, pod: dict) -> dict:
        """Give `pod` a nodeSelector on this pool (kube-scheduler then offers only these nodes) and unpark it
        (qosgate_stack.PARKED → the apiserver's default scheduler name)."""
        pod["spec"]["nodeSelector"] = dict(self.selector)
        if pod["spec"].get("schedulerName") == PARKED:
            del pod["spec"]["schedulerName"]
        return pod

    def delete(self) -> None:
        for name in self.nodes:
            self.cp.api.delete(f"/api/v1/nodes/{name}")
        self.nodes.clear()


@pytest.fixture
def node_pool(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[NodePool]:
    pool = NodePool(control_plane, f"pool-{uuid.uuid4().hex[:6]}")
    yield pool
    pool.delete()
