"""kube-scheduler extender v1 wire format (k8s.io/kube-scheduler/extender/v1), decoded and encoded by hand.

The Go types carry no JSON tags, so kube-scheduler sends capitalised field names and Go's decoder matches
names case-insensitively; we accept any case on input and always answer with the exact Go field names
(architecture §7.1). orjson on raw bytes, no pydantic: a filter with 5,000 node names is on the scheduling hot path.
Everything here is pure; `WireError` becomes an HTTP 400 in the app.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from qosgate.core.errors import bounded_message
from qosgate.core.podshape import pod_shape_errors


class WireError(ValueError):
    """The request body is not a valid extender message (answered with HTTP 400, never a 500)."""


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    pod: dict[str, Any]
    node_names: list[str]
    # The NodeList object when the scheduler sent the `Nodes` form (nodeCacheCapable: false), else None;
    # kept so the reply can echo the very items it was given.
    node_list: dict[str, Any] | None
    node_items: list[Any] | None


@dataclass(frozen=True, slots=True)
class BindingArgs:
    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str


def _fold(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Keys folded to lower case; later keys win, as they do when Go decodes duplicates into one field."""
    return {key.lower(): value for key, value in obj.items()} if obj else {}


def _load_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"{what}: body is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise WireError(f"{what}: body must be a JSON object, got {type(value).__name__}")
    return value


def _item_name(item: object, index: int) -> str:
    if isinstance(item, dict):
        metadata = item.get("metadata")
        if metadata is None:
            metadata = _fold(item).get("metadata")
        if isinstance(metadata, dict):
            name = metadata.get("name")
            if name is None:
                name = _fold(metadata).get("name")
            if isinstance(name, str) and name:
                return name
    raise WireError(f"ExtenderArgs.Nodes.items[{index}]: a node needs metadata.name")


def _check_pod(pod: dict[str, Any]) -> None:
    # kube-scheduler sends pods the apiserver validated; anything else is refused here, naming the field,
    # so the decisions never meet a field of the wrong type.
    problems = pod_shape_errors(pod, "ExtenderArgs.Pod")
    if problems:
        raise WireError(bounded_message([str(p) for p in problems]))


def decode_args(body: bytes) -> ExtenderArgs:
    """ExtenderArgs `{"Pod", "Nodes": NodeList|null, "NodeNames": [..]|null}` from the filter/prioritize body."""
    fields = _fold(_load_object(body, "ExtenderArgs"))
    pod = fields.get("pod")
    if not isinstance(pod, dict):
        raise WireError("ExtenderArgs.Pod: required, must be a Pod object")

    names = fields.get("nodenames")
    if names is not None:
        if not isinstance(names, list):
            raise WireError("ExtenderArgs.NodeNames: must be a list of node names")
        try:
            "".join(names)  # TypeError unless every entry is a string; C speed for 5,000 names
        except TypeError:
            raise WireError("ExtenderArgs.NodeNames: must be a list of node names") from None
        _check_pod(pod)
        return ExtenderArgs(pod=pod, node_names=names, node_list=None, node_items=None)
    node_list = fields.get("nodes")
    if node_list is None:
        raise WireError("ExtenderArgs: one of Nodes or NodeNames is required")
    if not isinstance(node_list, dict):
        raise WireError("ExtenderArgs.Nodes: must be a NodeList object")
    items = node_list.get("items")
    if items is None:
        items = _fold(node_list).get("items")
    if items is None:
        items = []  # Go encodes an empty NodeList as {"metadata":{},"items":null}
    if not isinstance(items, list):
        raise WireError("ExtenderArgs.Nodes.items: must be a list of Node objects")
    node_names = [_item_name(item, i) for i, item in enumerate(items)]
    _check_pod(pod)
    return ExtenderArgs(pod=pod, node_names=node_names, node_list=node_list, node_items=items)


@dataclass(frozen=True, slots=True)
class PreemptionArgs:
    pod: dict[str, Any]
    # node → (victim UIDs, NumPDBViolations), from NodeNameToMetaVictims or NodeNameToVictims
    victims: dict[str, tuple[list[str], int]]


def _victims(value: object, path: str, meta: bool) -> dict[str, tuple[list[str], int]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireError(f"{path}: must be an object of node name → victims")
    result: dict[str, tuple[list[str], int]] = {}
    for node, raw in value.items():
        here = f"{path}[{node}]"
        fields = _fold(raw) if isinstance(raw, dict) else None
        if fields is None:
            raise WireError(f"{here}: must be an object with Pods and NumPDBViolations")
        pods = fields.get("pods") or []
        violations = fields.get("numpdbviolations") or 0
        if not isinstance(pods, list) or not isinstance(violations, int) or isinstance(violations, bool):
            raise WireError(f"{here}: Pods must be a list and NumPDBViolations a number")
        uids = []
        for i, pod in enumerate(pods):
            holder = _fold(pod) if isinstance(pod, dict) else {}
            if not meta:
                metadata = holder.get("metadata")
                holder = _fold(metadata) if isinstance(metadata, dict) else {}
            uid = holder.get("uid")
            if not isinstance(uid, str) or not uid:
                raise WireError(f"{here}.Pods[{i}]: needs {'UID' if meta else 'metadata.uid'}")
            uids.append(uid)
        result[str(node)] = (uids, violations)
    return result


def decode_preemption(body: bytes) -> PreemptionArgs:
    """ExtenderPreemptionArgs `{Pod, NodeNameToVictims | NodeNameToMetaVictims}` (architecture §7.1)."""
    fields = _fold(_load_object(body, "ExtenderPreemptionArgs"))
    pod = fields.get("pod")
    if not isinstance(pod, dict):
        raise WireError("ExtenderPreemptionArgs.Pod: required, must be a Pod object")
    _check_pod(pod)
    victims = _victims(fields.get("nodenametometavictims"), "ExtenderPreemptionArgs.NodeNameToMetaVictims", True)
    victims.update({node: found for node, found in _victims(fields.get("nodenametovictims"),
                                                             "ExtenderPreemptionArgs.NodeNameToVictims",
                                                             False).items() if node not in victims})
    return PreemptionArgs(pod=pod, victims=victims)


def encode_preemption(victims: Mapping[str, tuple[Sequence[str], int]]) -> bytes:
    """ExtenderPreemptionResult: always the meta form, UIDs the scheduler maps back through its cache."""
    return orjson.dumps({"NodeNameToMetaVictims": {
        node: {"Pods": [{"UID": uid} for uid in uids], "NumPDBViolations": violations}
        for node, (uids, violations) in victims.items()}})


def decode_binding(body: bytes) -> BindingArgs:
    """ExtenderBindingArgs `{"PodName", "PodNamespace", "PodUID", "Node"}`."""
    fields = _fold(_load_object(body, "ExtenderBindingArgs"))
    values: dict[str, str] = {}
    for key, label in (("podname", "PodName"), ("podnamespace", "PodNamespace"), ("poduid", "PodUID"),
                       ("node", "Node")):
        value = fields.get(key)
        if not isinstance(value, str) or (not value and key != "poduid"):
            raise WireError(f"ExtenderBindingArgs.{label}: required, must be a non-empty string")
        values[key] = value
    return BindingArgs(pod_name=values["podname"], pod_namespace=values["podnamespace"],
                       pod_uid=values["poduid"], node=values["node"])


def encode_filter_result(args: ExtenderArgs, passed: Sequence[str], failed: Mapping[str, str],
                         unresolvable: Mapping[str, str], error: str = "") -> bytes:
    """ExtenderFilterResult in the form the request used; `passed` must be a subset of the input names."""
    result: dict[str, Any]
    if args.node_items is None:
        result = {"NodeNames": list(passed)}
    else:
        # Echo the scheduler's own node objects, in its order: it maps the reply back onto its node infos.
        keep = set(passed)
        items = [item for item, name in zip(args.node_items, args.node_names, strict=True) if name in keep]
        node_list = dict(args.node_list or {})
        node_list["items"] = items
        result = {"Nodes": node_list}
    result["FailedNodes"] = dict(failed)
    result["FailedAndUnresolvableNodes"] = dict(unresolvable)
    result["Error"] = error
    return orjson.dumps(result)


def encode_filter_error(args: ExtenderArgs | None, error: str) -> bytes:
    """A filter that could not decide: nothing passes and `Error` says why (the scheduler retries the pod)."""
    form = "Nodes" if args is not None and args.node_items is not None else "NodeNames"
    empty: Any = {"items": []} if form == "Nodes" else []
    return orjson.dumps({form: empty, "FailedNodes": {}, "FailedAndUnresolvableNodes": {}, "Error": error})


def encode_priorities(scores: Sequence[tuple[str, int]]) -> bytes:
    """HostPriorityList `[{"Host", "Score"}]`."""
    return orjson.dumps([{"Host": host, "Score": value} for host, value in scores])


def encode_binding_result(error: str = "") -> bytes:
    """ExtenderBindingResult `{"Error": ""}`."""
    return orjson.dumps({"Error": error})
