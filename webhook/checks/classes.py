"""Unknown QoS resources and classes (and anything else the catalog cannot compile) on a pod.

The messages are compile_pod's own: they name the field and list the classes the catalog allows, and the
mutating webhook already said the same thing — when it ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosgate.core.catalog import Catalog
from qosgate.core.compile import CompiledPod, compile_pod
from qosgate.core.errors import MAX_REPORTED, InvalidError, ShapeError
from qosgate.core.podshape import check_pod_shape
from qosgate.core.qosresources import extract_requests
from qosgate.webhook.checks import PASS, Finding, deny, malformed


def check_classes(pod: Mapping[str, Any], catalog: Catalog) -> tuple[Finding, CompiledPod | None]:
    """(finding, compiled pod). The compiled pod is None when the pod asks for no class or cannot compile.

    A pod without any QoS request is not compiled at all: its quantities are kube's business, and a pod
    qosgate has nothing to say about must never be refused for something unrelated to qosgate.
    """
    try:
        check_pod_shape(pod, complete=True)
        if not extract_requests(pod):
            return PASS, None
        compiled = compile_pod(pod, catalog)
    except ShapeError as exc:
        return malformed(f"malformed pod: {exc}"), None
    except InvalidError as exc:
        return deny(*(str(error) for error in exc.errors[:MAX_REPORTED]),
                    *([f"and {len(exc.errors) - MAX_REPORTED} more problems"] if len(exc.errors) > MAX_REPORTED
                      else [])), None
    return PASS, compiled
