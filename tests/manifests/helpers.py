"""Paths, names and small lookups over the renderings of `manifests/` (rendered by the real kustomize)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
BASE = MANIFESTS / "base"
CERT_MANAGER = MANIFESTS / "overlays" / "cert-manager"
SELF_SIGNED = MANIFESTS / "overlays" / "self-signed"
SECOND_SCHEDULER = MANIFESTS / "overlays" / "second-scheduler"
MONITORING = MANIFESTS / "overlays" / "monitoring"
NRI = MANIFESTS / "nri-memory-qos"
SCHEDULER_CONFIG = MANIFESTS / "scheduler" / "kube-scheduler-config.yaml"
SECOND_SCHEDULER_CONFIG = SECOND_SCHEDULER / "kube-scheduler-config.yaml"

NAMESPACE = "qosgate-system"
WEBHOOK = "qosgate-webhook"
EXTENDER = "qosgate-extender"
SCHEDULER = "qosgate-scheduler"
TLS_SECRET = "qosgate-webhook-tls"
CLIENT_SECRET = "qosgate-scheduler-client"
GENERATED = "generated"  # the self-signed overlay's folder written by `qosgate certs generate`

Obj = dict[str, Any]


def kinds(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Iterable[Obj], kind: str, name: str, namespace: str | None = None) -> Obj:
    found = [o for o in kinds(objects, kind)
             if o["metadata"]["name"] == name and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, f"expected one {kind} {namespace or ''}/{name}, found {len(found)}"
    return found[0]


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics (matchLabels AND matchExpressions); an empty selector matches all."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def unavailable(reason: str) -> None:
    """Skip for a missing tool (kustomize, promtool, kube-scheduler), or fail where CI requires them."""
    if os.environ.get("QOSGATE_REQUIRE_REAL_CLUSTER") == "1":
        pytest.fail(f"QOSGATE_REQUIRE_REAL_CLUSTER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def manifests_copy(tmp: Path) -> Path:
    """A copy of manifests/ (without anything generated) under `tmp`, to run documented commands in."""
    target = tmp / "manifests"
    shutil.copytree(MANIFESTS, target, ignore=shutil.ignore_patterns(GENERATED, "webhook-tls-secret.yaml"))
    return tmp


def documented_install(path: Path) -> tuple[list[str], str]:
    """(the `qosgate certs generate …` argv, the `kubectl apply -k DIR` directory) documented in `path`
    (YAML comments or Markdown), continuation lines joined. Exactly one of each must be documented."""
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines()]
    text = "\n".join(lines).replace("\\\n", " ")
    generate = re.findall(r"^(qosgate certs generate [^\n#]*)", text, re.M)
    assert len(set(generate)) == 1, f"{path} must document one `qosgate certs generate …` line, found {generate}"
    applies = re.findall(r"^kubectl apply -k (manifests/overlays/self-signed)\s*$", text, re.M)
    assert applies, f"{path} must document `kubectl apply -k manifests/overlays/self-signed`"
    return generate[0].split(), applies[0]
