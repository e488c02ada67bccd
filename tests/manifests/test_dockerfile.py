"""The Dockerfile, read as text (no Docker daemon here): pinned base, multi-stage, non-root, exec entrypoint."""

from __future__ import annotations

import json
import re
import tomllib

from tests.manifests.helpers import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", text, re.M)]


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def base_images() -> list[str]:
    args = dict(a.split("=", 1) for i, a in instructions() if i == "ARG" and "=" in a)
    images = []
    for stage in stages():
        image = stage[0][1].split()[0]
        images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return images


def test_base_is_python_311_slim_pinned_to_a_patch_release() -> None:
    images = base_images()
    assert len(images) >= 2, "multi-stage: build the wheel, then a runtime stage"
    for image in images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    assert len(set(images)) == 1, "the virtualenv links to the base's interpreter: one base for all stages"


def test_build_stage_makes_a_wheel_and_a_virtualenv() -> None:
    build = " ".join(args for _, args in stages()[0])
    assert "pip wheel" in build and "venv" in build
    copied = {args.split()[0] for i, args in stages()[0] if i == "COPY"}
    source_folders = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    assert source_folders <= copied
    assert PYPROJECT["project"]["readme"] in " ".join(a for i, a in stages()[0] if i == "COPY")


def test_runtime_stage_is_non_root_read_only_friendly_and_shell_free() -> None:
    final = stages()[-1]
    users = [args for i, args in final if i == "USER"]
    assert users and users[-1].split(":")[0] == "65532"
    env = " ".join(args for i, args in final if i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert not any(i == "RUN" for i, _ in final), "nothing runs in the runtime stage"
    (entrypoint,) = [args for i, args in final if i == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["qosgate"]  # exec form: no shell involved
    assert "qosgate" in PYPROJECT["project"]["scripts"]
    copies = [args for i, args in final if i == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies), "the runtime gets only the built venv"


def test_no_remote_adds() -> None:
    assert not any(i == "ADD" for i, _ in instructions())


def test_dockerignore_is_an_allow_list() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    # Exactly what the build stage copies in: a component missing here would fail `docker build`.
    copied = {source.rstrip("/") for i, args in instructions() if i == "COPY" and not args.startswith("--from=")
              for source in args.split()[:-1]}
    assert allowed == copied
    assert {"qosgate", "webhook", "extender", "certs", "agent"} <= allowed
