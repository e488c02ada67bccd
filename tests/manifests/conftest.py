"""Renderings of manifests/, computed once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.manifests.helpers import (
    BASE,
    CERT_MANAGER,
    NRI,
    REPO,
    SELF_SIGNED_SECRET_FILE,
    Obj,
    documented_certs_command,
    self_signed_workdir,
    substitute_ca_bundle,
)
from tests.support.kustomize import render


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
def self_signed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run the self-signed overlay's documented steps in a copy of the repo's manifests.

    1. the `qosgate certs generate …` line from the overlay's kustomization.yaml, verbatim, through
       the real CLI (stdout = caBundle, the Secret manifest written into the overlay);
    2. the documented sed that puts the bundle into the ca-bundle patches.
    Returns (the copy's root, the CA bundle).
    """
    root = tmp_path_factory.mktemp("self-signed")
    self_signed_workdir(root)
    argv = documented_certs_command(root / "manifests" / "overlays" / "self-signed" / "kustomization.yaml")
    assert argv[0] == "qosgate"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from qosgate.cli.main import main; sys.exit(main())", *argv[1:]],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    ca_bundle = result.stdout.strip()
    overlay = root / "manifests" / "overlays" / "self-signed"
    assert (overlay / SELF_SIGNED_SECRET_FILE).is_file()
    substitute_ca_bundle(overlay, ca_bundle)
    return root, ca_bundle


@pytest.fixture(scope="session")
def self_signed(self_signed_run: tuple[Path, str]) -> list[Obj]:
    root, _ = self_signed_run
    return render(root / "manifests" / "overlays" / "self-signed")


@pytest.fixture(scope="session")
def installs(base: list[Obj], cert_manager: list[Obj], self_signed: list[Obj]) -> dict[str, list[Obj]]:
    """Every rendering that installs qosgate: what must hold of the base must hold of each."""
    return {"base": base, "cert-manager": cert_manager, "self-signed": self_signed}
