"""Every annotation and label key qosgate reads or writes, defined once (architecture §2.1, §2.4, §5.1, §4.1.3)."""

from __future__ import annotations

import functools

DOMAIN = "qosgate.io"

# The carrier: how a pod asks for QoS classes on clusters that drop `qosResources` (architecture §2.1).
CARRIER_POD = "qos-resources.qosgate.io"
CARRIER_CONTAINER_PREFIX = "qos-resources.qosgate.io/"

# Written by the mutating webhook; the canonical figure the extender and quotas count.
MEMORY_MIN = "qosgate.io/memory-min"
RESOLVED = "qosgate.io/resolved"

# Node side.
PROTECTABLE_MEMORY = "qosgate.io/protectable-memory"
# KEP-3008 QOSResourceStatus carried on the node: "memory-qos=gold:10,silver:0;example.com/x=a" —
# classes a node offers with an optional per-class capacity (0 or absent = unlimited).
NODE_QOS_CLASSES = "qosgate.io/qos-classes"
# An admin's statement of the kubelet's memoryReservationPolicy on a node (none, legacy, tiered), used where
# the node agent has not reported one (architecture §5.2).
KUBELET_POLICY_LABEL = "qosgate.io/kubelet-memory-policy"

# The node agent's report: one coordination.k8s.io/v1 Lease per node in SYSTEM_NAMESPACE
# (qosgate.core.nodereport.lease_name), carrying the compact JSON report in the NODE_REPORT annotation and
# labelled NODE_REPORT_LABEL: "true" + APP_NAME_LABEL: APP_NAME, so the extender can watch them all.
NODE_REPORT = "qosgate.io/node-report"
NODE_REPORT_LABEL = "qosgate.io/node-report"
APP_NAME_LABEL = "app.kubernetes.io/name"
APP_NAME = "qosgate"

# On the extender's leader-election Lease, written by the leader at every renewal: where followers reach it, and
# what it knows that no API object shows (caches synced, caught up, reservations per node) for `qosgate status`.
LEADER_URL = "qosgate.io/leader-url"
EXTENDER_STATE = "qosgate.io/extender-state"

# Quota ConfigMaps (architecture §4.1.3).
QUOTA_LABEL = "qosgate.io/quota"

# NRI memory-qos plugin (containers/nri-plugins cmd/plugins/memory-qos).
NRI_SUFFIX = ".memory-qos.nri.io"
NRI_CLASS_PREFIX = "class.memory-qos.nri.io/"
NRI_MEMORY_MIN_PREFIX = "memory.min.memory-qos.nri.io/"
NRI_MEMORY_HIGH_PREFIX = "memory.high.memory-qos.nri.io/"

# koordinator.
KOORD_QOS_CLASS_LABEL = "koordinator.sh/qosClass"
KOORD_MEMORY_QOS = "koordinator.sh/memoryQOS"

SYSTEM_NAMESPACE = "qosgate-system"
CATALOG_CONFIGMAP = "qosgate-classes"


@functools.lru_cache(maxsize=4096)
def is_owned_annotation(key: str) -> bool:
    """True for keys only qosgate may write: users setting them are never trusted (architecture §2.4)."""
    return (
        key.startswith("qosgate.io/")
        or NRI_SUFFIX in key
        or key == KOORD_MEMORY_QOS
    )


def is_carrier_annotation(key: str) -> bool:
    return key == CARRIER_POD or key.startswith(CARRIER_CONTAINER_PREFIX)
