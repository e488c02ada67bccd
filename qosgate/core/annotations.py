"""Every annotation and label key qosgate reads or writes, defined once (DESIGN §2, §5, §8, §9)."""

from __future__ import annotations

import functools

DOMAIN = "qosgate.io"

# The carrier: how a pod asks for QoS classes on clusters that drop `qosResources` (DESIGN §2).
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

# Quota ConfigMaps (DESIGN §9).
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
    """True for keys only qosgate may write: users setting them are never trusted (DESIGN §5)."""
    return (
        key.startswith("qosgate.io/")
        or NRI_SUFFIX in key
        or key == KOORD_MEMORY_QOS
    )


def is_carrier_annotation(key: str) -> bool:
    return key == CARRIER_POD or key.startswith(CARRIER_CONTAINER_PREFIX)
