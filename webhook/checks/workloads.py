"""Pod-template workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, …).

Refused at apply time for what their pods would be refused for anyway: unknown classes (and anything else
the catalog cannot compile) and classes the namespace's quota does not allow. No capacity is charged — a
workload is a promise of pods, and its pods are counted when they are created.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qosgate.core.catalog import Catalog
from qosgate.core.compile import compile_pod
from qosgate.core.errors import InvalidError
from qosgate.core.podshape import pod_shape_errors
from qosgate.core.qosresources import QosRequests, class_assignments, extract_requests
from qosgate.core.quota import Quota, allow_list_verdict
from qosgate.core.workloads import describe, pod_templates
from qosgate.webhook.checks import PASS, Finding

# (API group, kind) of the workloads whose templates are checked. Pod itself has its own checks.
WORKLOAD_KINDS = frozenset({
    ("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "DaemonSet"), ("apps", "ReplicaSet"),
    ("batch", "Job"), ("batch", "CronJob"), ("", "ReplicationController"), ("", "PodTemplate"),
})


def _requests(template: Mapping[str, Any]) -> QosRequests | InvalidError:
    try:
        return extract_requests(template)
    except InvalidError as exc:
        return exc


def template_requests(obj: Mapping[str, Any] | None) -> dict[str, QosRequests | InvalidError]:
    return {path: _requests(template) for path, template in pod_templates(obj)} if obj else {}


def check_workload(obj: Mapping[str, Any], old: Mapping[str, Any] | None, namespace: str, catalog: Catalog,
                   quotas: Sequence[Quota]) -> Finding:
    """`old` is the oldObject on UPDATE: templates whose class requests did not change are not re-judged, so
    a later catalog or quota edit never blocks unrelated updates (image bumps, scaling) of an existing workload.
    """
    previous = template_requests(old)
    denials: list[str] = []
    warnings: list[str] = []
    what = describe({**obj, "metadata": {"namespace": namespace, **(obj.get("metadata") or {})}})
    for path, template in pod_templates(obj):
        shape = pod_shape_errors(template, path)
        if shape:
            denials.extend(f"{what}: malformed pod template: {error}" for error in shape)
            continue
        requests = _requests(template)
        if not isinstance(requests, InvalidError) and not requests:
            continue  # no QoS class: nothing of qosgate's to judge
        before = previous.get(path)
        if before is not None and not isinstance(before, InvalidError) and before == requests:
            continue
        where = f"{what} {path}" if path else what
        try:
            compiled = compile_pod(template, catalog)
        except InvalidError as exc:
            denials.extend(f"{where}: {error}" for error in exc.errors)
            continue
        verdict = allow_list_verdict(quotas, class_assignments(compiled.requests), namespace)
        denials.extend(f"{where}: {message}" for message in verdict.denials)
        warnings.extend(f"{where}: {message}" for message in verdict.warnings)
    if not denials and not warnings:
        return PASS
    return Finding(tuple(denials), tuple(warnings))
