"""Renderings of manifests/ by the real kustomize (`kubectl kustomize`), computed once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.manifests.helpers import (
    BASE,
    CERT_MANAGER,
    MONITORING,
    NRI,
    REPO,
    SECOND_SCHEDULER,
    SELF_SIGNED,
    Obj,
    documented_install,
    manifests_copy,
    unavailable,
)
from tests.support.kustomize import KustomizeUnavailable, kustomize_command, render


def pytest_configure(config: pytest.Config) -> None:
    # test_real_apiserver.py runs upstream binaries; `-m "not real_cluster"` leaves it out.
    config.addinivalue_line("markers", "real_cluster: runs real etcd/kube-apiserver/kube-scheduler processes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test that runs an upstream binary (kube-scheduler's config check, promtool) needs the build of
    # tests/realcluster/build (about 15 minutes the first time): it belongs to the real-cluster layer, so the
    # fast layer (`-m "not real_cluster and not kernel_vm"`) never starts that build.
    for item in items:
        if "control_plane_bin" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_cluster)


@pytest.fixture(scope="session", autouse=True)
def _kustomize() -> None:
    """Every test here looks at kustomize's output: without kustomize, skip (or fail where CI requires it)."""
    try:
        kustomize_command()
    except KustomizeUnavailable as error:
        unavailable(str(error))


@pytest.fixture(scope="session")
def base() -> list[Obj]:
    return render(BASE)


@pytest.fixture(scope="session")
def cert_manager() -> list[Obj]:
    return render(CERT_MANAGER)


@pytest.fixture(scope="session")
def nri() -> list[Obj]:
    return render(NRI)


@pytest.fixture(scope="session")
def second_scheduler() -> list[Obj]:
    return render(SECOND_SCHEDULER)


@pytest.fixture(scope="session")
def monitoring() -> list[Obj]:
    return render(MONITORING)


def run_qosgate(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, as a user runs it from `cwd` (the checkout's code, whatever is installed)."""
    assert argv[0] == "qosgate"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from qosgate.cli.main import main; sys.exit(main())", *argv[1:]],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture(scope="session")
def self_signed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The self-signed overlay's documented install, in a copy of the repository's manifests/:
    the `qosgate certs generate …` line from its kustomization.yaml, verbatim, through the real CLI.
    Returns (the copy's root, the overlay directory `kubectl apply -k` is given, the printed caBundle)."""
    root = manifests_copy(tmp_path_factory.mktemp("self-signed"))
    argv, overlay = documented_install(SELF_SIGNED / "kustomization.yaml")
    result = run_qosgate(argv, root)
    assert result.returncode == 0, result.stderr
    return root, root / overlay, result.stdout.strip()


@pytest.fixture(scope="session")
def self_signed(self_signed_run: tuple[Path, Path, str]) -> list[Obj]:
    _, overlay, _ = self_signed_run
    return render(overlay)


@pytest.fixture(scope="session")
def installs(base: list[Obj], cert_manager: list[Obj], self_signed: list[Obj]) -> dict[str, list[Obj]]:
    """Every rendering that installs qosgate: what must hold of the base must hold of each."""
    return {"base": base, "cert-manager": cert_manager, "self-signed": self_signed}


@pytest.fixture(scope="session")
def addons(second_scheduler: list[Obj], monitoring: list[Obj]) -> dict[str, list[Obj]]:
    """The optional add-ons, applied after an install."""
    return {"second-scheduler": second_scheduler, "monitoring": monitoring}


@pytest.fixture(scope="session")
def control_plane_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder with the upstream binaries tests/realcluster/build makes (kube-scheduler, promtool, …):
    `$QOSGATE_CONTROL_PLANE_BIN`, or built (once, cached) when `go` is available; else skip (or fail where
    CI requires them)."""
    from tests.realcluster.controlplane import BinariesUnavailable, find_binaries

    try:
        return find_binaries(tmp_path_factory.mktemp("control-plane-build") / "build.log")
    except BinariesUnavailable as error:
        unavailable(f"upstream binaries unavailable: {error}")
        raise  # unreachable: unavailable() skips or fails
