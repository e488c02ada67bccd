"""The shape of the pod fields qosgate reads, checked once at the door (pure).

kube-apiserver validates a pod's schema before it reaches a validating webhook, but an AdmissionReview body —
and `qosgate explain`/`render` input — can carry anything. Rather than making every reader defensive, the
readers (qosresources, memory, compile) assume the types this module guarantees, and a body that breaks
them gets one clear answer naming each wrong field (a 400 at admission, a CLI error elsewhere).

Only the fields qosgate reads are checked; everything else passes through untouched. Work is linear in the
size of the object, and the number of problems reported is bounded (`MAX_PROBLEMS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosgate.core.errors import FieldError, ShapeError

MAX_PROBLEMS = 20
CONTAINER_LISTS = ("initContainers", "containers")
_TEXT_FIELDS = ("name", "namespace", "generateName", "uid")
_SPEC_TEXT_FIELDS = ("schedulerName", "nodeName", "priorityClassName")


def _type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


class _Problems:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        if len(self.errors) < MAX_PROBLEMS:
            self.errors.append(FieldError(path, message))

    def expect(self, value: object, kind: type | tuple[type, ...], path: str, what: str,
               optional: bool = True) -> bool:
        if value is None and optional:
            return False
        if isinstance(value, kind):
            return True
        self.add(path, f"must be {what}, not {_type_name(value)}")
        return False


def _string_map(problems: _Problems, value: object, path: str) -> None:
    if not problems.expect(value, dict, path, "an object of string values") or not isinstance(value, dict):
        return
    for key, item in value.items():
        if not isinstance(item, str):
            problems.add(f"{path}[{key}]", f"must be a string, not {_type_name(item)}")


def _quantities(problems: _Problems, value: object, path: str) -> None:
    if not problems.expect(value, dict, path, "an object of quantities") or not isinstance(value, dict):
        return
    for key, item in value.items():
        if not isinstance(item, (str, int, float)) or isinstance(item, bool):
            problems.add(f"{path}.{key}", f"must be a quantity (string or number), not {_type_name(item)}")


def _qos_resources(problems: _Problems, value: object, path: str) -> None:
    if problems.expect(value, list, path, "a list of {name, class}") and isinstance(value, list):
        for i, entry in enumerate(value):
            problems.expect(entry, dict, f"{path}[{i}]", "an object with name and class", optional=False)


def _container(problems: _Problems, container: object, path: str) -> None:
    if not problems.expect(container, dict, path, "a container object", optional=False):
        return
    assert isinstance(container, dict)
    name = container.get("name")
    if not isinstance(name, str) or not name:
        problems.add(f"{path}.name", f"must be a non-empty string, not {_type_name(name)}")
    problems.expect(container.get("restartPolicy"), str, f"{path}.restartPolicy", "a string")
    resources = container.get("resources")
    if problems.expect(resources, dict, f"{path}.resources", "an object"):
        assert isinstance(resources, dict)
        _quantities(problems, resources.get("requests"), f"{path}.resources.requests")
        _quantities(problems, resources.get("limits"), f"{path}.resources.limits")
        _qos_resources(problems, resources.get("qosResources"), f"{path}.resources.qosResources")


def _string_values(value: object) -> bool:
    if value is None:
        return True
    if type(value) is not dict:
        return False
    return all(type(item) is str for item in value.values())


def _quantity_values(value: object) -> bool:
    if value is None:
        return True
    if type(value) is not dict:
        return False
    for item in value.values():
        kind = type(item)
        if kind is not str and kind is not int and kind is not float:
            return False
    return True


def _entries(value: object) -> bool:
    if value is None:
        return True
    if type(value) is not list:
        return False
    return all(type(entry) is dict for entry in value)


def _readable(pod: object, complete: bool) -> bool:
    """The common answer, fast: every field qosgate reads has its type (admission runs this per request).
    Straight-line checks with no error bookkeeping; `pod_shape_errors` words the problems when it says no."""
    if type(pod) is not dict:
        return False
    metadata = pod.get("metadata")
    if metadata is None:
        if complete:
            return False
    elif type(metadata) is not dict:
        return False
    else:
        for key in _TEXT_FIELDS:
            item = metadata.get(key)
            if item is not None and type(item) is not str:
                return False
        if not _string_values(metadata.get("annotations")) or not _string_values(metadata.get("labels")):
            return False
    spec = pod.get("spec")
    if spec is None:
        return not complete
    if type(spec) is not dict:
        return False
    for key in _SPEC_TEXT_FIELDS:
        item = spec.get(key)
        if item is not None and type(item) is not str:
            return False
    if not _entries(spec.get("qosResources")):
        return False
    for kind in CONTAINER_LISTS:
        containers = spec.get(kind)
        if containers is None:
            continue
        if type(containers) is not list:
            return False
        for container in containers:
            if type(container) is not dict:
                return False
            name = container.get("name")
            if type(name) is not str or not name:
                return False
            policy = container.get("restartPolicy")
            if policy is not None and type(policy) is not str:
                return False
            resources = container.get("resources")
            if resources is None:
                continue
            if type(resources) is not dict:
                return False
            if (not _quantity_values(resources.get("requests")) or not _quantity_values(resources.get("limits"))
                    or not _entries(resources.get("qosResources"))):
                return False
    return True


def pod_shape_errors(pod: object, prefix: str = "", complete: bool = False) -> list[FieldError]:
    """Problems with the types of the fields qosgate reads (at most MAX_PROBLEMS); [] when readable.

    `complete`: a stored object (admission), whose metadata and spec must be present; a template or a
    manifest being explained may omit them.
    """
    if _readable(pod, complete):
        return []
    problems = _Problems()
    at = f"{prefix}." if prefix else ""
    if not problems.expect(pod, dict, prefix or "object", "an object", optional=False):
        return problems.errors
    assert isinstance(pod, Mapping)
    metadata = pod.get("metadata")
    # Absent metadata or spec reads as empty (a template may omit them); present, they must be objects.
    if problems.expect(metadata, dict, f"{at}metadata", "an object", optional=not complete):
        assert isinstance(metadata, dict)
        for key in _TEXT_FIELDS:
            problems.expect(metadata.get(key), str, f"{at}metadata.{key}", "a string")
        _string_map(problems, metadata.get("annotations"), f"{at}metadata.annotations")
        _string_map(problems, metadata.get("labels"), f"{at}metadata.labels")
    spec = pod.get("spec")
    if problems.expect(spec, dict, f"{at}spec", "an object", optional=not complete):
        assert isinstance(spec, dict)
        for key in _SPEC_TEXT_FIELDS:
            problems.expect(spec.get(key), str, f"{at}spec.{key}", "a string")
        _qos_resources(problems, spec.get("qosResources"), f"{at}spec.qosResources")
        for kind in CONTAINER_LISTS:
            containers: Any = spec.get(kind)
            if problems.expect(containers, list, f"{at}spec.{kind}", "a list of containers"):
                for i, container in enumerate(containers):
                    _container(problems, container, f"{at}spec.{kind}[{i}]")
    return problems.errors


def check_pod_shape(pod: object, prefix: str = "", complete: bool = False) -> None:
    """Raise ShapeError naming every wrong field (bounded) unless the pod is readable."""
    errors = pod_shape_errors(pod, prefix, complete)
    if errors:
        raise ShapeError(errors)
