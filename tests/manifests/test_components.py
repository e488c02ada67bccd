"""manifests/components/route-kubelet-protected: the mutating webhook also sees pods shaped like Guaranteed pods
(second-scheduler mode with routeKubeletProtected), and nothing it saw before is lost. Rendered with the real
kubectl kustomize, the widened condition evaluated by cel-python as the API server would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.manifests.test_webhook_cel import pod
from tests.support.kustomize import render

celpy = pytest.importorskip("celpy", reason="cel-python (test extra) evaluates the CEL matchConditions")

REPO = Path(__file__).resolve().parents[2]


def mutating(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
    return found


# A user's install overlay: the base plus the component.
OVERLAY = Path(__file__).resolve().parent / "overlays" / "route-kubelet-protected"


@pytest.fixture(scope="module")
def widened() -> str:
    (condition,) = mutating(render(OVERLAY))["webhooks"][0]["matchConditions"]
    return str(condition["expression"])


def evaluate(expression: str, operation: str, obj: dict[str, Any] | None, old: dict[str, Any] | None = None) -> bool:
    env = celpy.Environment()
    result = env.program(env.compile(expression)).evaluate({
        "request": celpy.json_to_cel({"operation": operation, "name": "", "namespace": "tenant-a"}),
        "object": celpy.json_to_cel(obj), "oldObject": celpy.json_to_cel(old)})
    assert isinstance(result, celpy.celtypes.BoolType), result  # an error would skip the webhook
    return bool(result)


def shaped(limits: dict[str, str] | None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    found = pod(annotations)
    if limits is not None:
        found["spec"]["containers"][0]["resources"] = {"limits": limits}
    return found


def test_the_base_condition_is_carried_over_verbatim(widened: str) -> None:
    (condition,) = mutating(render(REPO / "manifests" / "base"))["webhooks"][0]["matchConditions"]
    assert widened.startswith("(\n" + condition["expression"] + "\n) ||\n")


def test_a_pod_with_cpu_and_memory_limits_everywhere_is_seen_on_create(widened: str) -> None:
    assert evaluate(widened, "CREATE", shaped({"cpu": "1", "memory": "1Gi"}))


@pytest.mark.parametrize("limits", [None, {"memory": "1Gi"}, {"cpu": "1"}, {}])
def test_other_plain_pods_still_never_reach_the_webhook(widened: str, limits: dict[str, str] | None) -> None:
    assert not evaluate(widened, "CREATE", shaped(limits))


def test_class_pods_are_still_seen(widened: str) -> None:
    assert evaluate(widened, "CREATE", shaped(None, {"qos-resources.qosgate.io": "memory-qos=gold"}))
    assert evaluate(widened, "UPDATE", shaped(None, {"team": "a"}), shaped(None, {"qosgate.io/memory-min": "1"}))
