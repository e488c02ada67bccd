"""Reading a pod's QoS-class requests (KEP-3008) from native fields and from the annotation carrier.

Native: `spec.qosResources` and `spec.{initContainers,containers}[].resources.qosResources`, each a list of
`{name, class}`. Carrier (what users can write today, architecture §2.1): `qos-resources.qosgate.io: "a=x,b=y"` for
the pod level and `qos-resources.qosgate.io/<container>` for one container. A pod-level resource is the
default for every container; a container-level entry overrides it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qosgate.core.annotations import CARRIER_CONTAINER_PREFIX, CARRIER_POD
from qosgate.core.errors import FieldError, InvalidError

_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_CLASS = _NAME_PART
CONTAINER_KINDS = ("initContainers", "containers")


def qualified_name_problem(name: object) -> str | None:
    """Why `name` is not a Kubernetes qualified name (`[prefix/]name`), or None when it is."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    prefix, slash, local = name.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"{name!r}: prefix must be a DNS subdomain of at most 253 characters"
    if len(local) > 63 or not _NAME_PART.fullmatch(local):
        return (f"{name!r}: name part must be at most 63 characters of [A-Za-z0-9-_.], "
                "starting and ending with an alphanumeric")
    return None


def class_name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name:
        return "class must be a non-empty string"
    if len(name) > 63 or not _CLASS.fullmatch(name):
        return f"class {name!r} must be at most 63 characters of [A-Za-z0-9-_.], alphanumeric at both ends"
    return None


@dataclass(frozen=True, slots=True)
class QosRequests:
    """What a pod asked for, before the catalog gives it meaning. Mappings keep the user's order."""

    pod: Mapping[str, str] = field(default_factory=dict)
    containers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.pod) or any(self.containers.values())

    def effective(self, container: str) -> dict[str, str]:
        """Classes in force for one container: pod-level defaults, container entries override."""
        merged = dict(self.pod)
        merged.update(self.containers.get(container, {}))
        return merged


@dataclass(frozen=True, slots=True)
class ClassAssignments:
    """What quotas count (KEP-3008): pod-level entries count pods, container-level entries count containers."""

    pod_level: tuple[tuple[str, str], ...] = ()
    container_level: tuple[tuple[str, str], ...] = ()

    @property
    def distinct(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.pod_level) | frozenset(self.container_level)


def parse_carrier(value: object, path: str) -> dict[str, str]:
    """Parse `name=class[,name=class…]`; every problem is reported, naming the annotation."""
    if not isinstance(value, str):
        raise InvalidError.single(path, "must be a string of name=class pairs")
    errors: list[FieldError] = []
    result: dict[str, str] = {}
    pairs = [p.strip() for p in value.split(",")]
    if pairs == [""]:
        raise InvalidError.single(path, "is empty; expected name=class pairs such as memory-qos=gold")
    for pair in pairs:
        name, eq, klass = (s.strip() for s in pair.partition("="))
        if not eq:
            errors.append(FieldError(path, f"{pair!r} is not of the form name=class"))
            continue
        problem = qualified_name_problem(name) or class_name_problem(klass)
        if problem:
            errors.append(FieldError(path, problem))
        elif name in result:
            errors.append(FieldError(path, f"resource {name!r} appears more than once"))
        else:
            result[name] = klass
    if errors:
        raise InvalidError(errors)
    return result


def _parse_native(entries: object, path: str, errors: list[FieldError]) -> dict[str, str]:
    if entries is None:
        return {}
    if not isinstance(entries, list):
        errors.append(FieldError(path, "must be a list of {name, class}"))
        return {}
    result: dict[str, str] = {}
    for i, entry in enumerate(entries):
        here = f"{path}[{i}]"
        if not isinstance(entry, dict):
            errors.append(FieldError(here, "must be an object with name and class"))
            continue
        name, klass = entry.get("name"), entry.get("class")
        problem = qualified_name_problem(name)
        if problem:
            errors.append(FieldError(f"{here}.name", problem))
            continue
        problem = class_name_problem(klass)
        if problem:
            errors.append(FieldError(f"{here}.class", problem))
            continue
        if name in result:
            errors.append(FieldError(f"{here}.name", f"resource {name!r} appears more than once"))
            continue
        result[str(name)] = str(klass)  # both checked to be names above
    return result


def _merge(native: dict[str, str], carrier: dict[str, str], path: str, errors: list[FieldError]) -> dict[str, str]:
    """Native fields and the carrier may both be present (e.g. after `qosgate render`); they must agree."""
    merged = dict(native)
    for name, klass in carrier.items():
        if name in merged and merged[name] != klass:
            errors.append(FieldError(path, f"resource {name!r}: carrier says {klass!r} but qosResources says "
                                           f"{merged[name]!r}"))
        merged[name] = klass
    return merged


def container_names(spec: Mapping[str, Any]) -> list[str]:
    names = []
    for kind in CONTAINER_KINDS:
        for container in spec.get(kind) or ():
            if isinstance(container, dict) and isinstance(container.get("name"), str):
                names.append(container["name"])
    return names


def extract_requests(pod: Mapping[str, Any]) -> QosRequests:
    """All QoS-class requests of a pod object (or pod template), validated; raises InvalidError."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, dict) or not isinstance(spec, dict):
        raise InvalidError.single("metadata.annotations", "must be an object")
    errors: list[FieldError] = []

    pod_native = _parse_native(spec.get("qosResources"), "spec.qosResources", errors)
    pod_carrier: dict[str, str] = {}
    if CARRIER_POD in annotations:
        try:
            pod_carrier = parse_carrier(annotations[CARRIER_POD], f"metadata.annotations[{CARRIER_POD}]")
        except InvalidError as exc:
            errors.extend(exc.errors)
    pod_level = _merge(pod_native, pod_carrier, f"metadata.annotations[{CARRIER_POD}]", errors)

    containers: dict[str, dict[str, str]] = {}
    for kind in CONTAINER_KINDS:
        for i, container in enumerate(spec.get(kind) or ()):
            if not isinstance(container, dict):
                continue
            resources = container.get("resources") or {}
            native = _parse_native(resources.get("qosResources") if isinstance(resources, dict) else None,
                                   f"spec.{kind}[{i}].resources.qosResources", errors)
            if native:
                containers[container.get("name", "")] = native

    names = container_names(spec)
    known = set(names)
    # Listed once per pod, not once per carrier: a pod naming thousands of missing containers must not get
    # an answer quadratic in its size (3,000 of them once made a 72 MB denial that stalled the webhook).
    shown = ", ".join(sorted(known)[:10]) or "none"
    if len(known) > 10:
        shown += f", … ({len(known)} in all)"
    for key, value in annotations.items():
        if not key.startswith(CARRIER_CONTAINER_PREFIX):
            continue
        name = key[len(CARRIER_CONTAINER_PREFIX):]
        path = f"metadata.annotations[{key}]"
        if name not in known:
            errors.append(FieldError(path, f"names container {name!r}, which the pod does not have "
                                           f"(containers: {shown})"))
            continue
        try:
            carrier = parse_carrier(value, path)
        except InvalidError as exc:
            errors.extend(exc.errors)
            continue
        containers[name] = _merge(containers.get(name, {}), carrier, path, errors)

    if errors:
        raise InvalidError(errors)
    return QosRequests(pod=pod_level, containers=containers)


def class_assignments(requests: QosRequests) -> ClassAssignments:
    return ClassAssignments(
        pod_level=tuple(requests.pod.items()),
        container_level=tuple((name, klass) for classes in requests.containers.values()
                              for name, klass in classes.items()),
    )


def pod_class_assignments(pod: Mapping[str, Any]) -> ClassAssignments:
    """Quota view of a pod; a pod whose requests cannot be read counts nothing (admission already denied it)."""
    try:
        return class_assignments(extract_requests(pod))
    except InvalidError:
        return ClassAssignments()
