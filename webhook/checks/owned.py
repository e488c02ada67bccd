"""Owned annotations and labels on a new pod must be exactly what the catalog computes (architecture §2.4).

Only the mutating webhook writes them. A pod arriving with a missing or different value either bypassed
that webhook (failurePolicy Ignore while it was down, or a matchCondition it slipped past) or was edited by
its author — either way the node backend and the scheduler extender would trust a figure qosgate never
computed, so the pod is refused rather than repaired (validating webhooks cannot patch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosgate.core import annotations as keys
from qosgate.core.compile import CompiledPod
from qosgate.webhook.checks import PASS, Finding, deny

_SHOWN = 60


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def check_owned(pod: Mapping[str, Any], compiled: CompiledPod | None) -> Finding:
    """`compiled` is None for a pod that asks for no class: then it must carry no owned annotation at all."""
    metadata = _map(pod.get("metadata"))
    annotations = _map(metadata.get("annotations"))
    expected = compiled.annotations if compiled is not None else {}
    problems: list[str] = []
    for key in sorted(k for k in annotations if keys.is_owned_annotation(k)):
        if key not in expected:
            problems.append(f"annotation {key} is set, but the catalog computes none for this pod")
        elif annotations[key] != expected[key]:
            problems.append(f"annotation {key} is {_show(annotations[key])}, the catalog computes "
                            f"{_show(expected[key])}")
    for key in sorted(expected.keys() - annotations.keys()):
        problems.append(f"annotation {key} is missing (the catalog computes {_show(expected[key])})")
    # The koordinator label is owned only for pods that asked for a class (as the mutating webhook does):
    # koordinator users label other pods themselves.
    if compiled is not None and compiled.labels:
        labels = _map(metadata.get("labels"))
        for key, value in sorted(compiled.labels.items()):
            if labels.get(key) != value:
                found = "missing" if key not in labels else f"{_show(labels[key])}"
                problems.append(f"label {key} is {found}, the catalog computes {_show(value)}")
    if not problems:
        return PASS
    if compiled is not None and not any(keys.is_owned_annotation(k) for k in annotations):
        # A class pod with none of qosgate's annotations: the mutating webhook did not run for it
        # (failurePolicy Ignore while it was unreachable or slow). A retry will most likely pass.
        return Finding(denials=("this pod asks for a QoS class but carries none of the annotations the qosgate "
                                "mutating webhook writes: that webhook did not run (unreachable or timed out); "
                                "retry the request",), retryable=True)
    return deny("annotations only qosgate may set disagree with the catalog (the qosgate mutating webhook was "
                "bypassed, or they were edited): " + "; ".join(problems))
