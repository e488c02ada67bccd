"""The layers of docs/architecture.md §1 hold: lower layers never import upper ones, and the core does no I/O.

Read from the source with `ast` (nothing is imported), following pyproject.toml's package-dir mapping, so a
component's top-level folder counts as the `qosgate.<component>` package it installs as.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPING: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]

# Layer of each top-level subpackage of qosgate; a module may import its own layer or lower ones only.
LAYERS = {
    "core": 0,
    "kube": 1, "serving": 1,
    "webhook": 2, "extender": 2, "agent": 2, "certs": 2,
    "cli": 3, "simulate": 3,
}
COMPONENTS = {"webhook", "extender", "agent", "certs"}
# What "no I/O" means for the core: no network, files, processes, event loops, or cluster clients.
CORE_FORBIDDEN = {"socket", "ssl", "asyncio", "subprocess", "http", "urllib", "shutil", "tempfile", "selectors",
                  "kubernetes", "urllib3", "httpx", "httptools", "uvloop", "prometheus_client", "cryptography"}
CORE_FORBIDDEN_CALLS = {"open", "print", "input"}
# Heavy clients the served processes must not load: the official Kubernetes client (~38 MB; kube/transport.py
# talks to the API server) and cryptography (~17 MB; serving reads certificates with the standard library).
# Only certificate generation — qosgate.certs, behind `qosgate certs` and --generate-certs — uses cryptography.
HEAVY = {"kubernetes": (), "kubernetes_validate": (), "cryptography": ("qosgate.certs",)}


def modules() -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) for every module of the installed `qosgate` package."""
    for package, folder in MAPPING.items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            relative = path.relative_to(base).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            first = parts[0] if parts else ""
            if package == "qosgate" and first in {p.split(".")[1] for p in MAPPING if p.count(".") == 1}:
                continue  # a component folder nested under qosgate/ would be listed twice; none exists
            yield ".".join([package, *parts]), path


def layer_of(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "qosgate" or len(parts) < 2:
        return None
    name = parts[1]
    return (name, LAYERS[name]) if name in LAYERS else None


def imports(path: Path, module: str) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:  # `from qosgate import webhook` names a module too
                yield f"{base}.{alias.name}", node.lineno


ALL = list(modules())


def test_every_module_belongs_to_a_known_layer() -> None:
    unknown = sorted({m for m, _ in ALL if m != "qosgate" and layer_of(m) is None})
    assert not unknown, f"add these to LAYERS (and docs/architecture.md §1): {unknown}"


@pytest.mark.parametrize("module, path", ALL, ids=[m for m, _ in ALL])
def test_imports_only_its_own_layer_or_lower(module: str, path: Path) -> None:
    own = layer_of(module)
    if own is None:
        return
    name, level = own
    wrong = []
    for target, line in imports(path, module):
        if target.split(".")[0] in {"webhook", "extender", "certs", "agent"}:
            wrong.append(f"line {line}: imports {target} — use qosgate.{target}")
            continue
        other = layer_of(target)
        if other is None or other[0] == name:
            continue
        # Upward is never allowed; sideways neither between the cluster and serving layers nor between
        # components (they meet only in the process level, which assembles them).
        if other[1] > level or (other[1] == level and level in (1, 2)):
            wrong.append(f"line {line}: {name} (layer {level}) imports {target} (layer {other[1]})")
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong)


@pytest.mark.parametrize("module, path", [(m, p) for m, p in ALL if (layer_of(m) or ("", 9))[0] == "core"],
                         ids=[m for m, _ in ALL if (layer_of(m) or ("", 9))[0] == "core"])
def test_the_core_does_no_io(module: str, path: Path) -> None:
    found = [f"line {line}: imports {target}" for target, line in imports(path, module)
             if target.split(".")[0] in CORE_FORBIDDEN]
    tree = ast.parse(path.read_text(), str(path))
    found += [f"line {node.lineno}: calls {node.func.id}()" for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in CORE_FORBIDDEN_CALLS]
    assert not found, f"{path.relative_to(ROOT)}: " + "; ".join(found)


@pytest.mark.parametrize("module, path", ALL, ids=[m for m, _ in ALL])
def test_no_heavy_client_outside_its_home(module: str, path: Path) -> None:
    wrong = [f"line {line}: imports {target}" for target, line in imports(path, module)
             if target.split(".")[0] in HEAVY
             and not any(module == home or module.startswith(home + ".") for home in HEAVY[target.split(".")[0]])]
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong)


def test_serving_processes_load_no_heavy_client() -> None:
    """What `qosgate serve` / `qosgate agent` import at run time, lazy imports included, in a fresh interpreter."""
    code = ("import sys\n"
            "from qosgate.cli.main import build_parser\n"
            "build_parser(['serve'])\n"
            "build_parser(['agent'])\n"
            "import qosgate.kube.config, qosgate.extender.wiring, qosgate.webhook.wiring, qosgate.agent.wiring\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'kubernetes', 'cryptography'}"
            " or m == 'qosgate.certs.generate'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a core module importing the webhook is reported."""
    sample = tmp_path / "bad.py"
    sample.write_text("from qosgate.webhook.app import admit\nimport socket\n")
    targets = [t for t, _ in imports(sample, "qosgate.core.bad")]
    assert "qosgate.webhook.app" in targets and "socket" in targets
    assert layer_of("qosgate.webhook.app") == ("webhook", 2) and layer_of("qosgate.core.bad") == ("core", 0)
