"""Per-type storage strategy: decode-time defaults, PrepareForCreate/Update, and validation.

Only the behaviour a client of qosgate can observe is modelled (pod defaults that feed memory
math, pod status on create, status-subresource ownership, generation, pod spec immutability,
name/label/annotation syntax). Everything here is a pure function of its inputs.
"""

from __future__ import annotations

import random
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import bad_request, conflict, invalid
from .resources import ResourceType
from .selectors import SelectorError, validate_label_key, validate_label_value

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Upstream's name generator alphabet: no vowels (no accidental words) and no look-alike digits.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_rng = random.SystemRandom()

TYPE_META = ("kind", "apiVersion")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_name(prefix: str) -> str:
    # generated names are capped at 63 characters: the prefix is cut to leave room for 5 random chars
    return prefix[:58] + "".join(_rng.choice(_SUFFIX_ALPHABET) for _ in range(5))


# ----- quantities (for pod QoS class only) -------------------------------------------------------
_QTY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_SUFFIX = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def parse_quantity(text: Any) -> Decimal | None:
    m = _QTY.match(str(text).strip())
    if not m:
        return None
    try:
        num = Decimal(m.group(1))
    except InvalidOperation:
        return None
    suffix = m.group(2)
    if not suffix:
        return num
    if suffix[0] in "eE":
        return num * (Decimal(10) ** int(suffix[1:]))
    return num * _SUFFIX[suffix]


def pod_qos_class(spec: dict[str, Any]) -> str:
    """BestEffort / Burstable / Guaranteed from cpu+memory requests and limits (after defaulting)."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    pod_res = spec.get("resources") or {}
    sources = (
        [pod_res]
        if (pod_res.get("requests") or pod_res.get("limits"))
        else [c.get("resources") or {} for c in containers]
    )
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for res in sources:
        lim_seen = set()
        for name in ("cpu", "memory"):
            req = parse_quantity((res.get("requests") or {}).get(name, "0")) or Decimal(0)
            lim = parse_quantity((res.get("limits") or {}).get(name, "0")) or Decimal(0)
            if req > 0:
                requests[name] = requests.get(name, Decimal(0)) + req
            if lim > 0:
                limits[name] = limits.get(name, Decimal(0)) + lim
                lim_seen.add(name)
        if lim_seen != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"


# ----- decode-time defaults ------------------------------------------------------------------------
def _default_container(c: dict[str, Any]) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = str(c.get("image") or "")
    if "imagePullPolicy" not in c:
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        c["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    res = c.get("resources")
    if res is None:
        c["resources"] = {}
        return
    limits = res.get("limits") or {}
    if limits:
        # A limit without a request defaults the request to the limit (this feeds memory.min math).
        requests = dict(res.get("requests") or {})
        for k, v in limits.items():
            requests.setdefault(k, v)
        res["requests"] = requests


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for field in ("containers", "initContainers"):
        for c in spec.get(field) or []:
            if isinstance(c, dict):
                _default_container(c)


def apply_defaults(rt: ResourceType, obj: dict[str, Any]) -> None:
    """What the apiserver's decoder defaulting does to a request body (mutates ``obj``, a fresh copy)."""
    spec = obj.get("spec")
    if rt.key == "pods" and isinstance(spec, dict):
        default_pod_spec(spec)
    elif rt.group in ("apps", "batch") and isinstance(spec, dict):
        template = spec.get("template")
        if rt.resource == "cronjobs":
            template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            default_pod_spec(template["spec"])
        if rt.resource in ("deployments", "statefulsets", "replicasets"):
            spec.setdefault("replicas", 1)
    elif rt.key == "namespaces":
        meta = obj.setdefault("metadata", {})
        if meta.get("name"):
            # Set by the apiserver so namespaceSelectors can match by name (cannot be removed by users).
            meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
        if isinstance(spec, dict) or spec is None:
            obj["spec"] = {"finalizers": ["kubernetes"], **(spec or {})}


# ----- create / update preparation ------------------------------------------------------------------
def _spec_like(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", *TYPE_META)}


def prepare_create(rt: ResourceType, obj: dict[str, Any]) -> None:
    """rest.BeforeCreate: name generation, uid, timestamps, status/generation reset (mutates ``obj``)."""
    meta = obj.setdefault("metadata", {})
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = generate_name(meta["generateName"])
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now_rfc3339()
    for drop in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink"):
        meta.pop(drop, None)
    if rt.tracks_generation:
        meta["generation"] = 1
    else:
        meta.pop("generation", None)
    if rt.status_on_create == "clear":
        obj["status"] = {}
    elif rt.status_on_create == "pod":
        obj["status"] = {"phase": "Pending", "qosClass": pod_qos_class(obj.get("spec") or {})}
    if rt.key == "namespaces":
        obj["status"] = {"phase": "Active"}


def prepare_update(rt: ResourceType, new: dict[str, Any], old: dict[str, Any], subresource: str) -> None:
    """rest.BeforeUpdate for the main resource or the status subresource (mutates ``new``)."""
    meta = new.setdefault("metadata", {})
    old_meta = old["metadata"]
    if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
        raise conflict(
            rt.resource,
            rt.group,
            old_meta["name"],
            f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {old_meta.get('uid')}",
        )
    for keep in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
        if keep in old_meta:
            meta[keep] = old_meta[keep]
        else:
            meta.pop(keep, None)
    if subresource == "status":
        # The status endpoint only moves .status; pods may also change labels/annotations there.
        status = new.get("status")
        rebuilt = {k: v for k, v in old.items() if k != "status"}
        if rt.key == "pods":
            rebuilt["metadata"] = {**old_meta, "labels": meta.get("labels"), "annotations": meta.get("annotations")}
            rebuilt["metadata"] = {k: v for k, v in rebuilt["metadata"].items() if v is not None}
        if status is not None:
            rebuilt["status"] = status
        new.clear()
        new.update(rebuilt)
        return
    if rt.status_reset_on_update:
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    if rt.tracks_generation and _spec_like(new) != _spec_like(old):
        meta["generation"] = int(old_meta.get("generation") or 0) + 1
    if rt.key == "namespaces":
        apply_defaults(rt, new)


# ----- validation ----------------------------------------------------------------------------------
_POD_MUTABLE_SPEC = (
    "activeDeadlineSeconds",
    "tolerations",
    "terminationGracePeriodSeconds",
    "schedulingGates",
)
_POD_UPDATE_MSG = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def _name_errors(rt: ResourceType, name: str) -> list[tuple[str, str, str]]:
    if not name:
        return [("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")]
    if rt.key == "namespaces":
        ok, what = len(name) <= 63 and bool(_DNS1123_LABEL.match(name)), "a lowercase RFC 1123 label"
    elif rt.key == "services":
        ok, what = len(name) <= 63 and bool(_DNS1035_LABEL.match(name)), "a DNS-1035 label"
    else:
        ok, what = len(name) <= 253 and bool(_DNS1123_SUBDOMAIN.match(name)), "a lowercase RFC 1123 subdomain"
    if ok:
        return []
    return [("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": must be {what}')]


def _meta_errors(meta: dict[str, Any]) -> list[tuple[str, str, str]]:
    errs: list[tuple[str, str, str]] = []
    for k, v in (meta.get("labels") or {}).items():
        try:
            validate_label_key(k)
            validate_label_value(v)
        except SelectorError as exc:
            errs.append(("metadata.labels", "FieldValueInvalid", f'Invalid value: "{k}": {exc}'))
    for k in meta.get("annotations") or {}:
        try:
            validate_label_key(k)
        except SelectorError as exc:
            errs.append(("metadata.annotations", "FieldValueInvalid", f'Invalid value: "{k}": {exc}'))
    size = sum(len(k) + len(v) for k, v in (meta.get("annotations") or {}).items() if isinstance(v, str))
    if size > 256 * 1024:
        errs.append(("metadata.annotations", "FieldValueTooLong", "Too long: must have at most 262144 bytes"))
    return errs


def _pod_errors(obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    errs: list[tuple[str, str, str]] = []
    spec = obj.get("spec") or {}
    containers = spec.get("containers") or []
    if not containers:
        errs.append(("spec.containers", "FieldValueRequired", "Required value"))
    seen: set[str] = set()
    for field in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(field) or []):
            name = c.get("name") or ""
            if not name:
                errs.append((f"spec.{field}[{i}].name", "FieldValueRequired", "Required value"))
            elif name in seen:
                errs.append((f"spec.{field}[{i}].name", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
            seen.add(name)
            if not c.get("image"):
                errs.append((f"spec.{field}[{i}].image", "FieldValueRequired", "Required value"))
    return errs


def validate(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """422 Invalid for what the real validation would refuse in the fields we model."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    errs = _name_errors(rt, name) if old is None else []
    errs += _meta_errors(meta)
    if rt.key == "pods":
        errs += _pod_errors(obj)
        if old is not None:
            errs += _pod_update_errors(obj, old)
    if errs:
        raise invalid(rt.kind, name, rt.group, errs)


def _without_mutable(spec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in spec.items() if k not in _POD_MUTABLE_SPEC}
    for field in ("containers", "initContainers"):
        if field in out:
            out[field] = [{k: v for k, v in c.items() if k != "image"} for c in out[field]]
    return out


def _pod_update_errors(new: dict[str, Any], old: dict[str, Any]) -> list[tuple[str, str, str]]:
    if _without_mutable(new.get("spec") or {}) == _without_mutable(old.get("spec") or {}):
        return []
    return [("spec", "FieldValueForbidden", "Forbidden: " + _POD_UPDATE_MSG)]


def check_identity(rt: ResourceType, obj: dict[str, Any], name: str | None, namespace: str) -> None:
    """Body vs URL: the namespace must agree (400), and for named requests the name too."""
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    if rt.namespaced:
        body_ns = meta.get("namespace")
        if body_ns and body_ns != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    if name is not None and meta.get("name") != name:
        raise bad_request(
            f"the name of the object ({meta.get('name') or ''}) does not match the name on the URL ({name})"
        )


def check_type_meta(
    rt: ResourceType, obj: dict[str, Any], kind: str | None = None, api_version: str | None = None
) -> None:
    want_kind = kind or rt.kind
    want_av = api_version or rt.api_version
    av = obj.get("apiVersion")
    if av and av != want_av:
        raise bad_request(f"the API version in the data ({av}) does not match the expected API version ({want_av})")
    k = obj.get("kind")
    if k and k != want_kind:
        raise bad_request(f"the kind in the data ({k}) does not match the expected kind ({want_kind})")
