"""A pod asking for a class must reach the extender's accounting: no preset node, no other scheduler.

Setting `spec.nodeName` at creation skips every scheduler, and a scheduler without the extender never
consults qosgate's ledger; either would let a class pod land on a node whose protectable memory is already
promised (architecture §4.2, §6.1). In second-scheduler mode (catalog `scheduling.schedulerName`) the
mutating webhook routes class pods to that scheduler; this check refuses what was routed elsewhere anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosgate.core.catalog import Catalog
from qosgate.webhook.checks import PASS, Finding, deny


def check_scheduling(pod: Mapping[str, Any], catalog: Catalog) -> Finding:
    """For a CREATE of a pod that asks for a class."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return PASS
    problems = []
    node = spec.get("nodeName")
    if node:
        problems.append(f"spec.nodeName is preset to {str(node)[:63]!r}: a pod asking for a QoS class must be "
                        "placed by a scheduler that calls the qosgate extender")
    wanted = catalog.scheduler_name
    if wanted and spec.get("schedulerName") != wanted:
        problems.append(f"spec.schedulerName is {str(spec.get('schedulerName'))[:63]!r}: pods asking for a QoS class "
                        f"must be scheduled by {wanted!r} (the scheduler running the qosgate extender)")
    return deny(*problems) if problems else PASS
