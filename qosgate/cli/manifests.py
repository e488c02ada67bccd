"""Reading and writing multi-document YAML manifests for the CLI, with errors naming file and document."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import yaml

from qosgate.core.errors import QosgateError


class ManifestError(QosgateError):
    pass


def read_text(path: str) -> str:
    """The file (or stdin for "-") as text; YAML and JSON manifests are UTF-8, anything else is refused."""
    try:
        if path == "-":
            return sys.stdin.buffer.read().decode("utf-8")
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{'<stdin>' if path == '-' else path}: not UTF-8 text (byte {exc.start}): "
                            "manifests are YAML or JSON") from None


def load_documents(path: str) -> list[tuple[int, Any]]:
    """(1-based document number, decoded object) for every non-empty document."""
    source = "<stdin>" if path == "-" else path
    text = read_text(path)
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ManifestError(f"{source}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    result = []
    for number, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"{source}: document {number}: must be a Kubernetes object (a mapping)")
        result.append((number, doc))
    return result


def dump_documents(objs: Iterable[Any]) -> str:
    return "---\n".join(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False) for obj in objs)
