"""pytest wiring for the real control plane: the `real_cluster` marker and the session fixture `control_plane`.

`control_plane` is a started `tests.realcluster.controlplane.ControlPlane` (etcd + kube-apiserver) shared by
the whole session; tests start kube-scheduler themselves (`control_plane.start_scheduler(...)`, a context
manager). Tests using it are marked `real_cluster` automatically. Without binaries (no
$QOSGATE_CONTROL_PLANE_BIN and no `go` to build them) those tests are skipped, or fail when
QOSGATE_REQUIRE_REAL_CLUSTER=1. Logs: <pytest tmp>/control-plane*/logs/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.realcluster.controlplane import BinariesUnavailable, ControlPlane, find_binaries

MARKER = "real_cluster: runs real etcd/kube-apiserver/kube-scheduler processes (tests/realcluster)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
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
