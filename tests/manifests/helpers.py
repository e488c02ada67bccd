"""Rendering `manifests/` the way `kubectl apply -k` would, and small lookups over the result."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
BASE = MANIFESTS / "base"
CERT_MANAGER = MANIFESTS / "overlays" / "cert-manager"
SELF_SIGNED = MANIFESTS / "overlays" / "self-signed"
NRI = MANIFESTS / "nri-memory-qos"
SCHEDULER_CONFIG = MANIFESTS / "scheduler" / "kube-scheduler-config.yaml"

NAMESPACE = "qosgate-system"
WEBHOOK = "qosgate-webhook"
EXTENDER = "qosgate-extender"
TLS_SECRET = "qosgate-webhook-tls"
SELF_SIGNED_SECRET_FILE = "webhook-tls-secret.yaml"
CA_BUNDLE_PLACEHOLDER = "REPLACE_WITH_QOSGATE_CA_BUNDLE"

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


def self_signed_workdir(tmp: Path) -> Path:
    """A copy of manifests/ to run the self-signed overlay's documented commands in."""
    target = tmp / "manifests"
    shutil.copytree(MANIFESTS, target, ignore=shutil.ignore_patterns(SELF_SIGNED_SECRET_FILE))
    return target


def documented_certs_command(path: Path) -> list[str]:
    """The `CA_BUNDLE=$(qosgate certs generate …)` command line documented in `path` (YAML comments or
    Markdown), continuation lines joined."""
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines()]
    text = " ".join(lines).replace("\\ ", " ")
    match = re.search(r"CA_BUNDLE=\$\((qosgate certs generate[^)]*)\)", text)
    assert match, f"{path} must document `CA_BUNDLE=$(qosgate certs generate …)`"
    return match.group(1).split()


def substitute_ca_bundle(overlay: Path, ca_bundle: str) -> None:
    """What the documented `sed -i "s|caBundle: .*|caBundle: ${CA_BUNDLE}|" ca-bundle-*.yaml` does."""
    for patch in sorted(overlay.glob("ca-bundle-*.yaml")):
        patch.write_text(re.sub(r"caBundle: .*", f"caBundle: {ca_bundle}", patch.read_text()))

