"""`qosgate explain`: what the webhook would resolve and write for each pod (template) in a manifest."""

from __future__ import annotations

from typing import Any

from qosgate.core.catalog import Catalog
from qosgate.core.compile import compile_pod
from qosgate.core.errors import FieldError, InvalidError
from qosgate.core.outlook import PolicyOutlook, outlook
from qosgate.core.podshape import check_pod_shape
from qosgate.core.quantity import format_bytes
from qosgate.core.workloads import describe, pod_templates


def explain_object(obj: dict[str, Any], catalog: Catalog) -> list[dict[str, Any]]:
    """One report per pod template; InvalidError (object-relative paths) when any template is invalid."""
    reports: list[dict[str, Any]] = []
    errors: list[FieldError] = []
    for path, template in pod_templates(obj):
        try:
            check_pod_shape(template)
            compiled = compile_pod(template, catalog)
        except InvalidError as exc:
            errors.extend(FieldError(f"{path}.{e.path}" if path else e.path, e.message) for e in exc.errors)
            continue
        reports.append({
            "object": describe(obj),
            "template": path or None,
            "memoryMin": compiled.memory_min,
            "containers": [
                {"name": c.name, "kind": c.kind, "classes": dict(c.classes), "request": c.request,
                 "limit": c.limit, "memoryMin": c.memory_min, "memoryHigh": c.memory_high}
                for c in compiled.containers
            ],
            "annotations": dict(compiled.annotations),
            "labels": dict(compiled.labels),
            "kernel": [_outlook_dict(o, catalog) for o in outlook(template, compiled, catalog)],
        })
    if errors:
        raise InvalidError(errors)
    return reports


def _outlook_dict(found: PolicyOutlook, catalog: Catalog) -> dict[str, Any]:
    return {
        "kubeletPolicy": found.policy,
        "catalogPolicy": found.policy == catalog.kubelet_policy,
        "qosClass": found.qos_class,
        "accounted": found.accounted,
        "podSliceWithoutAgent": found.pod_slice_without_agent,
        "reason": found.reason,
        "containers": [{"name": c.name, "kind": c.kind, "memoryMin": c.carries, "writer": c.writer or None,
                        "protectedWithoutAgent": c.without_agent, "protectedWithAgent": c.with_agent}
                       for c in found.containers],
    }


def _bytes(value: int | None) -> str:
    return "-" if value is None else format_bytes(value)


def format_report(report: dict[str, Any]) -> str:
    where = f" ({report['template']})" if report["template"] else ""
    lines = [f"{report['object']}{where}: pod memory.min {_bytes(report['memoryMin'])}"]
    for c in report["containers"]:
        classes = ",".join(f"{k}={v}" for k, v in c["classes"].items()) or "-"
        lines.append(f"  {c['kind']:<9} {c['name']:<24} classes {classes:<28} request {_bytes(c['request']):>7} "
                     f"limit {_bytes(c['limit']):>7} memory.min {_bytes(c['memoryMin']):>7} "
                     f"memory.high {_bytes(c['memoryHigh']):>7}")
    if report["annotations"] or report["labels"]:
        lines.append("  would write:")
        lines += [f"    annotation {k}: {v}" for k, v in report["annotations"].items()]
        lines += [f"    label {k}: {v}" for k, v in report["labels"].items()]
    else:
        lines.append("  would write nothing (no QoS-class request)")
    kernel = report.get("kernel") or []
    if any(c["memoryMin"] for o in kernel for c in o["containers"]):
        lines.append("  the kernel protects under node-wide pressure, by the node's kubelet Memory QoS policy:")
        lines.append(f"    {'policy':<16} {'container':<24} {'memory.min':>10}  {'written by':<15} "
                     f"{'no agent':>9} {'with agent':>10}")
        for o in kernel:
            policy = o["kubeletPolicy"] + (" (catalog)" if o["catalogPolicy"] else "")
            for i, c in enumerate(o["containers"]):
                lines.append(f"    {policy if i == 0 else '':<16} {c['name']:<24} {_bytes(c['memoryMin']):>10}  "
                             f"{c['writer'] or '-':<15} {_bytes(c['protectedWithoutAgent']):>9} "
                             f"{_bytes(c['protectedWithAgent']):>10}")
            lines.append(f"    {'':<16} {o['qosClass']} pod, extender counts {_bytes(o['accounted'])}; "
                         f"without the agent: {o['reason']}")
    return "\n".join(lines)
