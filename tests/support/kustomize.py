"""Render kustomizations with the real kustomize, exactly as `kubectl apply -k` would.

The renderer is the kustomize built into kubectl (`kubectl kustomize DIR`) or a stand-alone `kustomize build
DIR`, found in this order:

1. `$QOSGATE_KUSTOMIZE`: a path to a kubectl or kustomize executable (whichever its name says);
2. `kubectl` on PATH;
3. `kustomize` on PATH;
4. `kubectl` in `$QOSGATE_CONTROL_PLANE_BIN` (the folder tests/realcluster/build fills), if it holds one.

When none exists, `KustomizeUnavailable` says so; the manifests tests then skip (or fail under
`QOSGATE_REQUIRE_REAL_CLUSTER=1`). There is no home-made fallback: a test must never pass on a rendering
kustomize itself would not produce (generators, replacements and strategic merges are kustomize's to do).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "KustomizeUnavailable", "kustomize_command", "render", "render_text"]


class KustomizeUnavailable(Exception):
    """No kubectl or kustomize executable was found; the message says where it looked."""


class KustomizeError(Exception):
    """kustomize refused the kustomization; the message carries its stderr."""


def _command_for(executable: str) -> list[str]:
    name = Path(executable).name
    return [executable, "build"] if name.startswith("kustomize") else [executable, "kustomize"]


@cache
def kustomize_command() -> tuple[str, ...]:
    """The argv prefix that renders a directory given as the next argument."""
    configured = os.environ.get("QOSGATE_KUSTOMIZE")
    if configured:
        if not os.access(configured, os.X_OK):
            raise KustomizeUnavailable(f"QOSGATE_KUSTOMIZE={configured} is not an executable")
        return tuple(_command_for(configured))
    for name in ("kubectl", "kustomize"):
        found = shutil.which(name)
        if found:
            return tuple(_command_for(found))
    bin_dir = os.environ.get("QOSGATE_CONTROL_PLANE_BIN")
    if bin_dir and os.access(Path(bin_dir) / "kubectl", os.X_OK):
        return tuple(_command_for(str(Path(bin_dir) / "kubectl")))
    raise KustomizeUnavailable("no kustomize: install kubectl (or kustomize), or point QOSGATE_KUSTOMIZE at one")


def render_text(directory: str | os.PathLike[str]) -> str:
    """The YAML stream kustomize renders for `directory`."""
    done = subprocess.run([*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=60,
                          check=False)
    if done.returncode != 0:
        raise KustomizeError(f"kustomize {directory} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def render(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The objects kustomize renders for `directory`, in its output order."""
    return [doc for doc in yaml.safe_load_all(render_text(directory)) if doc is not None]
