"""Small shared vocabulary of the core, defined once (architecture §2)."""

from __future__ import annotations

from typing import Literal, get_args

# (QoS resource, class): the unit quotas and node class capacity count, e.g. ("memory-qos", "gold").
ClassKey = tuple[str, str]

# How a pod's memory.min is known (architecture §5.2): `annotated` — the figure qosgate's mutating webhook
# wrote; `kubelet` — KEP-2570 clusters where the kubelet protects every container's requests.
Accounting = Literal["annotated", "kubelet"]
ACCOUNTING_MODES: tuple[Accounting, ...] = get_args(Accounting)
