"""Namespace QoS-class quotas (architecture §4.1.3, KEP-3008 `QOSResourceQuota`): parsing and the admission decision.

Pure: no I/O, no clock. The quota webhook feeds `evaluate` the cache's usage plus its reservations.

Semantics:
- A quota is an allow-list. A (resource, class) requested at pod level is allowed only when listed under
  `pod:`, at container level only when listed under `container:` (the KEP counts the two separately).
- `capacity` caps simultaneous assignments: pods for `pod:` entries, containers for `container:` entries;
  0 or absent = unlimited.
- `maxMemoryMin` (qosgate extension) caps the summed `qosgate.io/memory-min` of the namespace's pods that
  use the class (at either level: a pod counts once per distinct class it uses). The cap belongs to the
  class, whichever level lists it; when both levels give one, the tighter applies.
- No quota for a namespace (and no cluster default) = unrestricted.
- Several quota ConfigMaps in one namespace all apply, like ResourceQuota: a pod must satisfy each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import yaml

from qosgate.core.errors import FieldError, InvalidError, unknown_field_errors
from qosgate.core.qosresources import ClassAssignments, class_name_problem, qualified_name_problem
from qosgate.core.quantity import format_bytes, parse_quantity
from qosgate.core.types import ClassKey

QUOTA_DATA_KEY = "quota.yaml"
QUOTA_LABEL_VALUE = "true"
ENFORCEMENTS = ("deny", "warn", "dryrun")
Enforcement = Literal["deny", "warn", "dryrun"]
Level = Literal["pod", "container"]

_TOP_KEYS = {"enforcement", "pod", "container"}
_RESOURCE_KEYS = {"name", "classes"}
_CLASS_KEYS = {"name", "capacity", "maxMemoryMin"}


@dataclass(frozen=True, slots=True)
class ClassLimit:
    name: str
    capacity: int = 0  # 0 = unlimited
    max_memory_min: int | None = None  # None = no cap


@dataclass(frozen=True, slots=True)
class Quota:
    source: str  # "configmap ns/name", for messages
    enforcement: Enforcement = "deny"
    pod: Mapping[str, Mapping[str, ClassLimit]] = field(default_factory=dict)
    container: Mapping[str, Mapping[str, ClassLimit]] = field(default_factory=dict)

    def limits(self, level: Level) -> Mapping[str, Mapping[str, ClassLimit]]:
        return self.pod if level == "pod" else self.container

    def class_names(self) -> list[ClassKey]:
        """Every (resource, class) listed at either level, for cross-checks against the catalog."""
        seen: dict[ClassKey, None] = {}
        for level in (self.pod, self.container):
            for resource, classes in level.items():
                for klass in classes:
                    seen[(resource, klass)] = None
        return list(seen)


class UsageLike(Protocol):
    """What `evaluate` reads per class; the pod store's ClassUsage satisfies it structurally."""

    @property
    def pods(self) -> int: ...

    @property
    def containers(self) -> int: ...

    @property
    def memory_min(self) -> int: ...


@dataclass(slots=True)
class Usage:
    """A mutable running total, for cache usage plus reservations."""

    pods: int = 0
    containers: int = 0
    memory_min: int = 0


# --- parsing ----------------------------------------------------------------------------------------------

def _named_entries(raw: list[object], path: str, allowed: set[str], name_problem: Callable[[object], str | None],
                   what: str, shape: str, errors: list[FieldError]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, name, entry) for each well-formed entry of a list keyed by `name`; the rest become errors."""
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        here = f"{path}[{i}]"
        if not isinstance(entry, dict):
            errors.append(FieldError(here, f"must be an object with {shape}"))
            continue
        errors.extend(unknown_field_errors(entry, allowed, here))
        problem = name_problem(entry.get("name"))
        if problem:
            errors.append(FieldError(f"{here}.name", problem))
            continue
        name = entry["name"]
        if name in seen:
            errors.append(FieldError(f"{here}.name", f"{what} {name!r} is listed more than once"))
            continue
        seen.add(name)
        yield here, name, entry


def _parse_classes(raw: object, path: str, errors: list[FieldError]) -> dict[str, ClassLimit]:
    if not isinstance(raw, list) or not raw:
        # An empty list would silently forbid the resource; omitting it says that explicitly.
        errors.append(FieldError(path, "must be a non-empty list of {name, capacity?, maxMemoryMin?}"))
        return {}
    classes: dict[str, ClassLimit] = {}
    for here, name, entry in _named_entries(raw, path, _CLASS_KEYS, class_name_problem, "class", "a name", errors):
        capacity = entry.get("capacity", 0)
        if capacity is None:
            capacity = 0
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            errors.append(FieldError(f"{here}.capacity", f"must be an integer ≥ 0 (0 = unlimited), got {capacity!r}"))
            capacity = 0
        max_memory_min = None
        if entry.get("maxMemoryMin") is not None:
            try:
                max_memory_min = parse_quantity(entry["maxMemoryMin"], f"{here}.maxMemoryMin")
            except InvalidError as exc:
                errors.extend(exc.errors)
        classes[name] = ClassLimit(name=name, capacity=capacity, max_memory_min=max_memory_min)
    return classes


def _parse_level(raw: object, path: str, errors: list[FieldError]) -> dict[str, dict[str, ClassLimit]]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        errors.append(FieldError(path, "must be a list of {name, classes}"))
        return {}
    resources: dict[str, dict[str, ClassLimit]] = {}
    for here, name, entry in _named_entries(raw, path, _RESOURCE_KEYS, qualified_name_problem, "resource",
                                            "name and classes", errors):
        resources[name] = _parse_classes(entry.get("classes"), f"{here}.classes", errors)
    return resources


def parse_quota(raw: object, source: str = "quota") -> Quota:
    """Validate a decoded quota document; InvalidError names every bad field, prefixed by `source`."""
    errors: list[FieldError] = []
    if raw is None:
        raw = {}  # an empty document is a quota that allows nothing, which is a legitimate choice
    if not isinstance(raw, dict):
        raise InvalidError.single(source, "must be a mapping with enforcement, pod and container")
    errors.extend(unknown_field_errors(raw, _TOP_KEYS, ""))
    enforcement = raw.get("enforcement", "deny")
    if enforcement not in ENFORCEMENTS:
        errors.append(FieldError("enforcement", f"must be one of {', '.join(ENFORCEMENTS)}, got {enforcement!r}"))
        enforcement = "deny"
    pod = _parse_level(raw.get("pod"), "pod", errors)
    container = _parse_level(raw.get("container"), "container", errors)
    if errors:
        raise InvalidError(FieldError(f"{source}: {e.path}", e.message) for e in errors)
    return Quota(source=source, enforcement=enforcement, pod=pod, container=container)


def load_quota_yaml(text: object, source: str = "quota") -> Quota:
    if not isinstance(text, str):
        raise InvalidError.single(source, "must be a string holding YAML")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidError.single(source, f"not valid YAML: {exc}") from None
    return parse_quota(raw, source)


def configmap_source(configmap: Mapping[str, Any]) -> str:
    metadata = configmap.get("metadata") or {}
    return f"configmap {metadata.get('namespace', '')}/{metadata.get('name', '')}"


def quota_from_configmap(configmap: Mapping[str, Any]) -> Quota:
    """The quota a labelled ConfigMap holds; its only data key is `quota.yaml`."""
    source = configmap_source(configmap)
    data = configmap.get("data") or {}
    if not isinstance(data, dict):
        raise InvalidError.single(f"{source}: data", "must be an object")
    errors = [FieldError(f"{source}: data[{key}]", f"unknown key (a quota ConfigMap holds only {QUOTA_DATA_KEY!r})")
              for key in data if key != QUOTA_DATA_KEY]
    if QUOTA_DATA_KEY not in data:
        errors.append(FieldError(f"{source}: data", f"missing key {QUOTA_DATA_KEY!r}"))
    if errors:
        raise InvalidError(errors)
    quota = load_quota_yaml(data[QUOTA_DATA_KEY], f"{source}: data[{QUOTA_DATA_KEY}]")
    # Messages cite the ConfigMap, not the data key.
    return Quota(source=source, enforcement=quota.enforcement, pod=quota.pod, container=quota.container)


# --- usage ------------------------------------------------------------------------------------------------

def add_usage(usage: dict[ClassKey, Usage], request: ClassAssignments, memory_min: int, sign: int = 1) -> None:
    """Add (or with sign=-1 remove) one pod's assignments, counting like the pod store does."""
    for key in request.pod_level:
        usage.setdefault(key, Usage()).pods += sign
    for key in request.container_level:
        usage.setdefault(key, Usage()).containers += sign
    for key in request.distinct:
        usage.setdefault(key, Usage()).memory_min += sign * memory_min


def combined_usage(base: Mapping[ClassKey, UsageLike],
                   reservations: Iterable[tuple[ClassAssignments, int]]) -> dict[ClassKey, Usage]:
    """Cache usage plus reserved pods, as a fresh mutable mapping the caller may keep adding to."""
    usage = {key: Usage(u.pods, u.containers, u.memory_min) for key, u in base.items()}
    for request, memory_min in reservations:
        add_usage(usage, request, memory_min)
    return usage


# --- decisions --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class QuotaDecision:
    allowed: bool
    messages: tuple[str, ...] = ()


_ZERO = Usage()


def decide(quota: Quota, usage: Mapping[ClassKey, UsageLike], request: ClassAssignments, memory_min: int,
           namespace: str) -> QuotaDecision:
    """Would admitting a pod with these assignments keep the namespace within `quota`? Every reason is given."""
    messages: list[str] = []
    for level, counts in (("pod", Counter(request.pod_level)), ("container", Counter(request.container_level))):
        limits = quota.limits(level)  # type: ignore[arg-type]
        for (resource, klass), count in counts.items():
            limit = limits.get(resource, {}).get(klass)
            if limit is None:
                allowed = ", ".join(limits.get(resource, {})) or "none"
                where = "" if level == "pod" else " for containers"
                messages.append(f"namespace {namespace}: {resource} class {klass} not allowed{where} "
                                f"(allowed: {allowed})")
                continue
            used = usage.get((resource, klass), _ZERO)
            if limit.capacity:
                if level == "pod" and used.pods + count > limit.capacity:
                    messages.append(f"namespace {namespace}: {resource} class {klass} at capacity "
                                    f"{used.pods}/{limit.capacity}")
                elif level == "container" and used.containers + count > limit.capacity:
                    messages.append(f"namespace {namespace}: {resource} class {klass} at container capacity "
                                    f"{used.containers}/{limit.capacity} ({count} requested)")
    # The memory cap is about the class, whichever level lists it: the tighter of the two applies, whenever
    # the pod uses the class at any level.
    for resource, klass in dict.fromkeys((*request.pod_level, *request.container_level)):
        caps = [limit.max_memory_min for level in ("pod", "container")
                if (limit := quota.limits(level).get(resource, {}).get(klass)) is not None
                and limit.max_memory_min is not None]
        if not caps:
            continue
        cap, used = min(caps), usage.get((resource, klass), _ZERO)
        if used.memory_min + memory_min > cap:
            messages.append(f"namespace {namespace}: {resource} class {klass} maxMemoryMin {format_bytes(cap)} "
                            f"would be exceeded ({format_bytes(used.memory_min)} used + "
                            f"{format_bytes(memory_min)} requested)")
    return QuotaDecision(allowed=not messages, messages=tuple(messages))


@dataclass(frozen=True, slots=True)
class QuotaVerdict:
    """All quotas in force for a namespace, folded by enforcement mode."""

    denials: tuple[str, ...] = ()  # from `deny` quotas: the pod is refused
    warnings: tuple[str, ...] = ()  # from `warn` quotas: admitted, the client sees a warning
    audit: tuple[str, ...] = ()  # from `dryrun` quotas: admitted, recorded in the audit log only

    @property
    def admitted(self) -> bool:
        return not self.denials


ALLOW = QuotaVerdict()


def evaluate(quotas: Sequence[Quota], usage: Mapping[ClassKey, UsageLike], request: ClassAssignments,
             memory_min: int, namespace: str) -> QuotaVerdict:
    if not quotas:
        return ALLOW
    denials: list[str] = []
    warnings: list[str] = []
    audit: list[str] = []
    for quota in quotas:
        decision = decide(quota, usage, request, memory_min, namespace)
        if decision.allowed:
            continue
        target = denials if quota.enforcement == "deny" else warnings if quota.enforcement == "warn" else audit
        target.extend(decision.messages)
    return QuotaVerdict(tuple(denials), tuple(warnings), tuple(audit))


def allow_list_verdict(quotas: Sequence[Quota], request: ClassAssignments, namespace: str) -> QuotaVerdict:
    """Only the allow-list part (workload templates: no capacity is charged until pods exist)."""
    if not quotas:
        return ALLOW
    unlimited = [Quota(source=q.source, enforcement=q.enforcement,
                       pod=_without_limits(q.pod), container=_without_limits(q.container)) for q in quotas]
    return evaluate(unlimited, {}, request, 0, namespace)


def _without_limits(level: Mapping[str, Mapping[str, ClassLimit]]) -> dict[str, dict[str, ClassLimit]]:
    return {resource: {name: ClassLimit(name) for name in classes} for resource, classes in level.items()}


def quotas_in_force(own: Sequence[Quota], cluster_default: Sequence[Quota]) -> Sequence[Quota]:
    """A namespace's own quota ConfigMaps replace the cluster default from qosgate-system entirely."""
    return own if own else cluster_default


# --- allowances (architecture §4.1.3: capacity a replica holds and spends without an API round trip) ---------

# A dimension no deny quota limits. Never compared against: needs and grants exist only for limited dimensions.
UNLIMITED = 2**62
DIMENSIONS = ("pods", "containers", "memory_min")


def amount_of(request: ClassAssignments, memory_min: int) -> dict[ClassKey, Usage]:
    """What admitting one pod adds to its namespace's usage, per class (the pod store's counting)."""
    amount: dict[ClassKey, Usage] = {}
    add_usage(amount, request, memory_min)
    return amount


def allowance_limits(quotas: Sequence[Quota]) -> dict[ClassKey, Usage] | None:
    """The tightest limit per class and dimension over the deny quotas (UNLIMITED where none limits it).

    None when a warn or dryrun quota limits anything: its warnings must see exact usage, which capacity held
    by other replicas cannot give, so such namespaces keep per-pod reservations.
    """
    limits: dict[ClassKey, Usage] = {}
    for quota in quotas:
        for level in ("pod", "container"):
            for resource, classes in quota.limits(level).items():
                for klass, limit in classes.items():
                    if not limit.capacity and limit.max_memory_min is None:
                        continue
                    if quota.enforcement != "deny":
                        return None
                    found = limits.setdefault((resource, klass), Usage(UNLIMITED, UNLIMITED, UNLIMITED))
                    if limit.capacity:
                        if level == "pod":
                            found.pods = min(found.pods, limit.capacity)
                        else:
                            found.containers = min(found.containers, limit.capacity)
                    if limit.max_memory_min is not None:
                        found.memory_min = min(found.memory_min, limit.max_memory_min)
    return limits


def limited_part(amount: Mapping[ClassKey, UsageLike], limits: Mapping[ClassKey, UsageLike]) -> dict[ClassKey, Usage]:
    """Only the dimensions some quota limits (the rest never needs capacity held for it); empty when none."""
    part: dict[ClassKey, Usage] = {}
    for key, value in amount.items():
        limit = limits.get(key)
        if limit is None:
            continue
        kept = Usage(value.pods if limit.pods < UNLIMITED else 0,
                     value.containers if limit.containers < UNLIMITED else 0,
                     value.memory_min if limit.memory_min < UNLIMITED else 0)
        if kept.pods or kept.containers or kept.memory_min:
            part[key] = kept
    return part


def covers(spare: Mapping[ClassKey, UsageLike], need: Mapping[ClassKey, UsageLike]) -> bool:
    """Does `spare` hold at least `need` in every class and dimension `need` asks for?"""
    for key, wanted in need.items():
        have = spare.get(key)
        if have is None:
            return False
        if have.pods < wanted.pods or have.containers < wanted.containers or have.memory_min < wanted.memory_min:
            return False
    return True


def add_amounts(total: dict[ClassKey, Usage], amount: Mapping[ClassKey, UsageLike], sign: int = 1) -> None:
    for key, value in amount.items():
        found = total.setdefault(key, Usage())
        found.pods += sign * value.pods
        found.containers += sign * value.containers
        found.memory_min += sign * value.memory_min


def headroom(limits: Mapping[ClassKey, UsageLike], usage: Mapping[ClassKey, UsageLike]) -> dict[ClassKey, Usage]:
    """limit − usage per limited class and dimension (may be negative); UNLIMITED stays UNLIMITED."""
    room: dict[ClassKey, Usage] = {}
    for key, limit in limits.items():
        used = usage.get(key, _ZERO)
        room[key] = Usage(*(UNLIMITED if getattr(limit, d) >= UNLIMITED else getattr(limit, d) - getattr(used, d)
                            for d in DIMENSIONS))
    return room


def prefetch(room: Mapping[ClassKey, UsageLike], typical: Mapping[ClassKey, UsageLike], wanted: int,
             holders: int) -> dict[ClassKey, Usage]:
    """Extra capacity to hold beyond the pods being admitted, so the next `wanted` similar pods need no write.

    `room` is the headroom left after this batch, `typical` one recent pod's limited need, `holders` the
    replicas holding capacity in the namespace (this one included). Only where the room is ample — at least
    16 typical pods per holder — and never more than room / (2 × holders): replicas never hold so much that
    another is refused while capacity sits unused elsewhere for long, and near capacity every pod is granted
    exactly (a write per admission, as without allowances).
    """
    extra: dict[ClassKey, Usage] = {}
    holders = max(1, holders)
    for key, unit in typical.items():
        left = room.get(key)
        if left is None:
            return {}
        grant = Usage()
        for dimension in DIMENSIONS:
            step = getattr(unit, dimension)
            available = getattr(left, dimension)
            if step <= 0 or available >= UNLIMITED:
                continue
            if available < 16 * holders * step:
                grant = Usage()  # one tight dimension: the pod is only as grantable as its tightest part
                break
            setattr(grant, dimension, min(wanted * step, available // (2 * holders)))
        if not (grant.pods or grant.containers or grant.memory_min):
            return {}  # a pod needs every class it uses: capacity held in the others alone would sit unused
        extra[key] = grant
    return extra
