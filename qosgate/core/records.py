"""Compact, immutable views of the pods and nodes qosgate caches (pure: dicts in, records out).

The cache holds up to ~150,000 pods, so a record keeps only what the extender and quotas decide on, and the
values repeated across pods (namespaces, node names, phases, class tuples) are shared objects rather than
one copy per pod. A raw object that cannot be read is never an exception here: the watch must keep going,
so the bad part becomes a neutral value plus a line in `problems`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from qosgate.core.annotations import (
    CARRIER_POD,
    KUBELET_POLICY_LABEL,
    MEMORY_MIN,
    NODE_QOS_CLASSES,
    PROTECTABLE_MEMORY,
)
from qosgate.core.cgtree import BESTEFFORT, BURSTABLE, GUARANTEED
from qosgate.core.errors import InvalidError
from qosgate.core.memory import pod_requests_memory
from qosgate.core.nodeoffer import parse_node_offer
from qosgate.core.podprotection import kernel_memory_min, pod_qos_class
from qosgate.core.qosresources import pod_class_assignments
from qosgate.core.quantity import parse_quantity
from qosgate.core.types import Accounting, ClassKey

_T = TypeVar("_T")

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
# What kube-apiserver defaults when the field is absent, so records look the same whoever created the pod.
DEFAULT_PHASE = "Pending"
DEFAULT_SCHEDULER = "default-scheduler"


@dataclass(slots=True, frozen=True)
class PodTraits:
    """What a pod record holds that thousands of pods have in common; one shared object per combination."""

    phase: str
    terminating: bool  # metadata.deletionTimestamp set: still running until the kubelet confirms
    scheduler_name: str
    qos_class: str
    pod_classes: tuple[ClassKey, ...]  # pod-level assignments (count pods)
    container_classes: tuple[ClassKey, ...]  # container-level assignments (count containers)
    classes: frozenset[ClassKey]  # distinct (resource, class) the pod uses
    problems: tuple[str, ...]  # unreadable annotations or quantities, reported rather than raised


@dataclass(slots=True, frozen=True)
class PodRecord:
    """One cached pod. Per-pod values are fields; the repeated ones live in a shared `PodTraits` (8 slots instead
    of 15: 56 bytes less per pod, 8 MB at 150,000 pods) and read through the properties below."""

    uid: str
    namespace: str
    name: str
    node_name: str  # "" while unbound
    memory_min: int  # the figure under the store's accounting: qosgate's annotation, or the requests (kubelet)
    # What the kernel may be asked to protect for this pod, by writer (architecture §5.2): qosgate's own
    # figure and the pod's memory requests (PodRequests + overhead); its QoS class is in the traits.
    qosgate_min: int
    requests_memory: int
    traits: PodTraits

    @property
    def phase(self) -> str:
        return self.traits.phase

    @property
    def terminating(self) -> bool:
        return self.traits.terminating

    @property
    def scheduler_name(self) -> str:
        return self.traits.scheduler_name

    @property
    def qos_class(self) -> str:
        return self.traits.qos_class

    @property
    def pod_classes(self) -> tuple[ClassKey, ...]:
        return self.traits.pod_classes

    @property
    def container_classes(self) -> tuple[ClassKey, ...]:
        return self.traits.container_classes

    @property
    def classes(self) -> frozenset[ClassKey]:
        return self.traits.classes

    @property
    def problems(self) -> tuple[str, ...]:
        return self.traits.problems

    def carried_min(self, kubelet_policy: str) -> int:
        """The memory.min this pod carries on a node with that kubelet policy (qosgate's backend assumed on)."""
        return kernel_memory_min(self.traits.qos_class, self.requests_memory, self.qosgate_min, kubelet_policy, True)

    @property
    def active(self) -> bool:
        """Still holds memory: anything not finished. Terminating pods count until they are gone."""
        return self.traits.phase not in TERMINAL_PHASES

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(slots=True, frozen=True)
class NodeRecord:
    name: str
    allocatable_memory: int
    protectable_override: int | None  # qosgate.io/protectable-memory
    # None = annotation absent: the node offers every class, unlimited. {} = offers none.
    offered_classes: Mapping[str, Mapping[str, int]] | None
    unschedulable: bool
    problems: tuple[str, ...] = ()  # unparsable node annotations, reported rather than crashing
    kubelet_policy: str | None = None  # the admin's qosgate.io/kubelet-memory-policy label, when valid

    def __hash__(self) -> int:
        # The read-only mappings are unhashable; the other fields identify a record well enough.
        return hash((self.name, self.allocatable_memory, self.protectable_override, self.unschedulable))


class _Shared:
    """Canonical copies of values many records repeat, so 150,000 pods hold a handful of class tuples.

    Bounded: past the limit the table starts over. Records stay correct either way; only sharing suffers,
    and a cluster with that many distinct class combinations is already unusual.
    """

    __slots__ = ("_limit", "_table")

    def __init__(self, limit: int = 4096):
        self._table: dict[object, object] = {}
        self._limit = limit

    def get(self, value: _T) -> _T:
        found = self._table.get(value)
        if found is not None:
            return found  # type: ignore[return-value]
        if len(self._table) >= self._limit:
            self._table.clear()
        self._table[value] = value
        return value


_shared_tuples = _Shared()
_shared_sets = _Shared()
_shared_traits = _Shared()
_EMPTY: tuple[Any, ...] = ()
_NO_CLASSES: frozenset[ClassKey] = frozenset()


def _intern(value: object, default: str = "") -> str:
    return sys.intern(value) if isinstance(value, str) else default


def _class_tuple(pairs: tuple[ClassKey, ...]) -> tuple[ClassKey, ...]:
    if not pairs:
        return _EMPTY
    return _shared_tuples.get(tuple(_shared_tuples.get((sys.intern(r), sys.intern(c))) for r, c in pairs))


def _native_classes(spec: Mapping[str, Any]) -> bool:
    if spec.get("qosResources"):
        return True
    for kind in ("initContainers", "containers"):
        containers = spec.get(kind)
        if not isinstance(containers, list):
            continue
        for container in containers:
            resources = container.get("resources") if isinstance(container, dict) else None
            if isinstance(resources, dict) and resources.get("qosResources"):
                return True
    return False


_Classes = tuple[tuple[ClassKey, ...], tuple[ClassKey, ...], frozenset[ClassKey]]
_NONE: _Classes = (_EMPTY, _EMPTY, _NO_CLASSES)
# Parsed class assignments by carrier signature. Pods of one workload share their annotations, so a relist
# of 150,000 pods parses a few hundred distinct carriers instead of every pod's.
_carrier_results: dict[tuple[object, ...], _Classes] = {}
_CARRIER_CACHE_LIMIT = 4096


def _carrier_key(annotations: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple[object, ...]:
    """What the parsed classes depend on when no native field is present: the carrier annotations, plus
    the container names when a container-level carrier may cite them (unknown names are errors)."""
    carrier = tuple([item for item in annotations.items() if item[0].startswith(CARRIER_POD)])
    if len(carrier) == 1 and carrier[0][0] == CARRIER_POD:
        return carrier
    return (carrier, *[c.get("name") for kind in ("initContainers", "containers")
                       for c in _list(spec.get(kind)) if isinstance(c, dict)])


def _pod_classes(obj: Mapping[str, Any], annotations: Mapping[str, Any], spec: Mapping[str, Any]) -> _Classes:
    native = _native_classes(spec)
    key: tuple[object, ...] | None = None
    if not native:
        if not any(k.startswith(CARRIER_POD) for k in annotations):
            return _NONE
        key = _carrier_key(annotations, spec)
        try:
            found = _carrier_results.get(key)
        except TypeError:  # a malformed object with unhashable values: parse it, do not cache it
            key = found = None
        if found is not None:
            return found
    assignments = pod_class_assignments(obj)
    pod_classes = _class_tuple(assignments.pod_level)
    container_classes = _class_tuple(assignments.container_level)
    classes = _NO_CLASSES
    if pod_classes or container_classes:
        classes = _shared_sets.get(frozenset(pod_classes) | frozenset(container_classes))
    result = (pod_classes, container_classes, classes)
    if key is not None:
        if len(_carrier_results) >= _CARRIER_CACHE_LIMIT:
            _carrier_results.clear()
        _carrier_results[key] = result
    return result


_requests_results: dict[tuple[object, ...], int] = {}


def _kubelet_memory_min(spec: Mapping[str, Any]) -> int:
    """pod_requests_memory, memoised on the memory fields: replicas of one workload share their figure."""
    key: list[object] = []
    for kind in ("initContainers", "containers"):
        for c in _list(spec.get(kind)):
            resources = _dict(c.get("resources")) if isinstance(c, dict) else {}
            key.append((kind, _dict(resources.get("requests")).get("memory"),
                        _dict(resources.get("limits")).get("memory"), c.get("restartPolicy")))
    signature = tuple(key)
    try:
        return _requests_results[signature]
    except KeyError:
        pass
    except TypeError:  # unhashable garbage in the fields: compute (and probably report) without caching
        return pod_requests_memory(spec)
    value = pod_requests_memory(spec)
    if len(_requests_results) >= _CARRIER_CACHE_LIMIT:
        _requests_results.clear()
    _requests_results[signature] = value
    return value


# Parsed memory-min annotations by their text. Replicas of a workload carry the same figure, so they share
# one int object too (an int above 256 is a fresh 32-byte object per pod otherwise: ~5 MB at 150,000 pods).
_min_values: dict[str, int] = {}


def _memory_min_annotation(value: object) -> int:
    if isinstance(value, str):
        found = _min_values.get(value)
        if found is not None:
            return found
    # The webhook writes plain byte counts; skip the general quantity grammar for them.
    if isinstance(value, str) and value.isdigit() and len(value) < 19 and value.isascii():
        parsed = int(value)
    else:
        parsed = parse_quantity(value, f"metadata.annotations[{MEMORY_MIN}]")
    if isinstance(value, str):
        if len(_min_values) >= _CARRIER_CACHE_LIMIT:
            _min_values.clear()
        _min_values[value] = parsed
    return parsed


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


_STATUS_QOS = {"Guaranteed": GUARANTEED, "Burstable": BURSTABLE, "BestEffort": BESTEFFORT}


def _overhead(spec: Mapping[str, Any]) -> int:
    overhead = _dict(spec.get("overhead")).get("memory")
    return 0 if overhead is None else parse_quantity(overhead, "spec.overhead.memory")


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def object_uid(obj: Mapping[str, Any]) -> str:
    """The identity a store keys on: metadata.uid, or namespace/name for objects without one."""
    metadata = _dict(obj.get("metadata"))
    uid = metadata.get("uid")
    if isinstance(uid, str) and uid:
        return uid
    return f"{metadata.get('namespace') or ''}/{metadata.get('name') or ''}"


def pod_record_from_raw(obj: Mapping[str, Any], accounting: Accounting = "annotated") -> PodRecord:
    """Build a record from a pod as the API returns it (JSON-decoded dict).

    Runs once per pod per LIST (150,000 times at start-up) and once per watch event, hence the plain
    lookups; anything malformed still degrades to neutral values rather than raising.
    """
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    status = obj.get("status")
    phase = status.get("phase") if isinstance(status, dict) else None
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
    problems: tuple[str, ...] = ()

    qosgate_min = 0
    value = annotations.get(MEMORY_MIN)
    if value is not None:
        try:
            qosgate_min = _memory_min_annotation(value)
        except InvalidError as exc:
            if accounting == "annotated":
                problems = (str(exc),)
    requests_memory = 0
    try:
        requests_memory = _kubelet_memory_min(spec)  # the memoised object, shared by the workload's replicas
        overhead = _overhead(spec)
        if overhead:
            requests_memory += overhead
    except (InvalidError, AttributeError, TypeError) as exc:
        # Malformed containers (not dicts) surface as AttributeError/TypeError from the memory math. The API
        # validates requests, so this is a problem only where the requests are what the pod counts.
        if accounting == "kubelet":
            problems = (str(exc) if isinstance(exc, InvalidError) else f"spec: unreadable containers ({exc})",)
    memory_min = qosgate_min if accounting == "annotated" else requests_memory
    found = status.get("qosClass") if isinstance(status, dict) else None
    qos = _STATUS_QOS.get(found) if isinstance(found, str) else None
    if qos is None:  # the API server sets status.qosClass at creation; compute it for objects without one
        qos = pod_qos_class(obj)

    pod_classes, container_classes, classes = _pod_classes(obj, annotations, spec)
    uid = metadata.get("uid")
    name = metadata.get("name")
    namespace = metadata.get("namespace")
    node_name = spec.get("nodeName")
    scheduler_name = spec.get("schedulerName")
    traits = _shared_traits.get(PodTraits(
        phase=sys.intern(phase) if isinstance(phase, str) else DEFAULT_PHASE,
        terminating=metadata.get("deletionTimestamp") is not None,
        scheduler_name=sys.intern(scheduler_name) if isinstance(scheduler_name, str) else DEFAULT_SCHEDULER,
        qos_class=qos,
        pod_classes=pod_classes,
        container_classes=container_classes,
        classes=classes,
        problems=problems,
    ))
    return PodRecord(
        uid=uid if isinstance(uid, str) and uid else object_uid(obj),
        namespace=sys.intern(namespace) if isinstance(namespace, str) else "",
        name=name if isinstance(name, str) else "",
        node_name=sys.intern(node_name) if isinstance(node_name, str) else "",
        memory_min=memory_min,
        qosgate_min=qosgate_min,
        requests_memory=requests_memory,
        traits=traits,
    )


def freeze_offer(offer: dict[str, dict[str, int]]) -> Mapping[str, Mapping[str, int]]:
    return MappingProxyType({name: MappingProxyType(classes) for name, classes in offer.items()})


def node_record_from_raw(obj: Mapping[str, Any]) -> NodeRecord:
    """Build a record from a node object.

    An unparsable `qos-classes` annotation makes the node offer *nothing* (fail closed): the admin meant
    to restrict the node, and guessing what they meant could place pods where their class is not served.
    An unparsable protectable override falls back to the percentage rule.
    """
    metadata = _dict(obj.get("metadata"))
    spec = _dict(obj.get("spec"))
    annotations = _dict(metadata.get("annotations"))
    allocatable = _dict(_dict(obj.get("status")).get("allocatable"))
    problems: list[str] = []

    allocatable_memory = 0
    if "memory" in allocatable:
        try:
            allocatable_memory = parse_quantity(allocatable["memory"], "status.allocatable.memory")
        except InvalidError as exc:
            problems.append(str(exc))

    override: int | None = None
    if PROTECTABLE_MEMORY in annotations:
        try:
            override = parse_quantity(annotations[PROTECTABLE_MEMORY], f"metadata.annotations[{PROTECTABLE_MEMORY}]")
        except InvalidError as exc:
            problems.append(str(exc))

    offered: Mapping[str, Mapping[str, int]] | None = None
    if NODE_QOS_CLASSES in annotations:
        try:
            offered = freeze_offer(parse_node_offer(annotations[NODE_QOS_CLASSES],
                                                     f"metadata.annotations[{NODE_QOS_CLASSES}]"))
        except InvalidError as exc:
            problems.append(str(exc))
            offered = MappingProxyType({})

    labels = _dict(metadata.get("labels"))
    kubelet_policy = labels.get(KUBELET_POLICY_LABEL)
    if kubelet_policy is not None and kubelet_policy not in ("none", "legacy", "tiered"):
        problems.append(f"metadata.labels[{KUBELET_POLICY_LABEL}]: must be none, legacy or tiered, "
                        f"not {kubelet_policy!r}")
        kubelet_policy = None
    return NodeRecord(
        kubelet_policy=kubelet_policy,
        name=_intern(metadata.get("name")),
        allocatable_memory=allocatable_memory,
        protectable_override=override,
        offered_classes=offered,
        unschedulable=bool(spec.get("unschedulable")),
        problems=tuple(problems),
    )
