"""The class catalog (architecture §2.2): which QoS resources and classes exist and what each class means on a node.

Loaded from YAML (a file, or the `catalog.yaml` key of the `qosgate-classes` ConfigMap). Validation reports
every offending field at once; callers keep the last valid catalog in force when a new one is rejected.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import yaml

from qosgate.core.errors import FieldError, InvalidError, unknown_field_errors
from qosgate.core.qosresources import class_name_problem, qualified_name_problem
from qosgate.core.types import Accounting

T = TypeVar("T")

BACKENDS = ("nri-memory-qos", "koordinator", "kubelet")
KOORDINATOR_QOS_CLASSES = ("LSE", "LSR", "LS", "BE", "SYSTEM")
RESERVED_PREFIXES = ("k8s.io/", "kubernetes.io/")
CATALOG_DATA_KEY = "catalog.yaml"

_CLASS_KEYS = {"name", "memoryMinPercent", "throttlePercent", "swap", "nriClass", "koordinatorQoSClass"}
_MEMORY_KEYS = _CLASS_KEYS - {"name"}
_RESOURCE_KEYS = {"name", "classes"}
_TOP_KEYS = {"resources", "backends", "protectablePercent", "kubeletPolicy", "scheduling"}
_SCHEDULING_KEYS = {"schedulerName", "routeKubeletProtected"}
# What the kubelet protects by itself on nodes whose node agent has not reported (architecture §5.2).
KUBELET_POLICIES = ("none", "legacy", "tiered")
DEFAULT_SCHEDULER = "default-scheduler"


@dataclass(frozen=True, slots=True)
class QosClass:
    name: str
    memory_min_percent: int = 0
    throttle_percent: int = 0
    swap: bool = False
    nri_class: str | None = None
    koordinator_qos_class: str = "LS"


@dataclass(frozen=True, slots=True)
class QosResource:
    name: str
    classes: Mapping[str, QosClass]
    # True for the one resource whose classes carry memory semantics (memory.min / memory.high).
    memory: bool = False


@dataclass(frozen=True, slots=True)
class Catalog:
    resources: Mapping[str, QosResource]
    backends: tuple[str, ...] = ("nri-memory-qos",)
    protectable_percent: int = 90
    memory_resource: str | None = field(default=None)
    # The kubelet's memoryReservationPolicy assumed for nodes without a fresh agent report: "legacy" (every
    # request protected, the kubelet backend), "tiered" (Guaranteed pods' requests) or "none".
    kubelet_policy: str = "none"
    # Second-scheduler mode (architecture §4.2.2): pods qosgate accounts for are given this schedulerName
    # ("" = leave schedulerName alone); with route_kubelet_protected also the pods the kubelet protects itself.
    scheduler_name: str = ""
    route_kubelet_protected: bool = False

    @property
    def accounting(self) -> Accounting:
        """kubelet (KEP-2570) protects every pod's requests itself, so that is what a node promises."""
        return "kubelet" if "kubelet" in self.backends else "annotated"

    def lookup(self, resource: str, klass: str, path: str) -> QosClass:
        qos_resource = self.resources.get(resource)
        if qos_resource is None:
            known = ", ".join(self.resources) or "none"
            raise InvalidError.single(path, f"unknown QoS resource {resource!r} (known: {known})")
        qos_class = qos_resource.classes.get(klass)
        if qos_class is None:
            allowed = ", ".join(qos_resource.classes)
            raise InvalidError.single(path, f"unknown class {klass!r} for {resource} (allowed: {allowed})")
        return qos_class


def _int_field(raw: Mapping[str, Any], key: str, path: str, low: int, high: int,
               errors: list[FieldError], default: int) -> int:
    if key not in raw:
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append(FieldError(f"{path}.{key}" if path else key,
                                 f"must be an integer from {low} to {high}, got {value!r}"))
        return default
    return value


def _parse_class(raw: object, path: str, errors: list[FieldError]) -> QosClass | None:
    if not isinstance(raw, dict):
        errors.append(FieldError(path, "must be an object with at least a name"))
        return None
    errors.extend(unknown_field_errors(raw, _CLASS_KEYS, path))
    problem = class_name_problem(raw.get("name"))
    if problem:
        errors.append(FieldError(f"{path}.name", problem))
        return None
    swap = raw.get("swap", False)
    if not isinstance(swap, bool):
        errors.append(FieldError(f"{path}.swap", f"must be true or false, got {swap!r}"))
        swap = False
    nri_class = raw.get("nriClass")
    if nri_class is not None and class_name_problem(nri_class):
        errors.append(FieldError(f"{path}.nriClass", class_name_problem(nri_class) or ""))
        nri_class = None
    koord = raw.get("koordinatorQoSClass", "LS")
    if koord not in KOORDINATOR_QOS_CLASSES:
        errors.append(FieldError(f"{path}.koordinatorQoSClass",
                                 f"must be one of {', '.join(KOORDINATOR_QOS_CLASSES)}, got {koord!r}"))
        koord = "LS"
    if swap and nri_class is None:
        errors.append(FieldError(f"{path}.swap", "swap is granted through an NRI class: set nriClass too"))
    return QosClass(
        name=raw["name"],
        memory_min_percent=_int_field(raw, "memoryMinPercent", path, 0, 100, errors, 0),
        throttle_percent=_int_field(raw, "throttlePercent", path, 0, 100, errors, 0),
        swap=swap,
        nri_class=nri_class,
        koordinator_qos_class=koord,
    )


def parse_catalog(raw: object, source: str = "catalog") -> Catalog:
    """Validate a decoded catalog document; InvalidError names every bad field (prefixed by `source`)."""
    errors: list[FieldError] = []
    if not isinstance(raw, dict):
        raise InvalidError.single(source, "must be a mapping with resources and backends")
    errors.extend(unknown_field_errors(raw, _TOP_KEYS, ""))

    backends = raw.get("backends", ["nri-memory-qos"])
    if not isinstance(backends, list) or not backends:
        errors.append(FieldError("backends", f"must be a non-empty list of {', '.join(BACKENDS)}"))
        backends = []
    for i, backend in enumerate(backends):
        if backend not in BACKENDS:
            errors.append(FieldError(f"backends[{i}]", f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})"))
    # Only known names go on: an unknown entry may be a mapping, which set() below cannot hash.
    backends = [b for b in backends if b in BACKENDS]
    if len(set(backends)) != len(backends):
        errors.append(FieldError("backends", "lists a backend more than once"))
    if "kubelet" in backends and len(backends) > 1:
        errors.append(FieldError("backends", "kubelet sets memory.min for every pod itself and cannot be "
                                             "combined with another backend"))

    protectable_percent = _int_field(raw, "protectablePercent", "", 1, 100, errors, 90)
    kubelet_policy = raw.get("kubeletPolicy", "legacy" if "kubelet" in backends else "none")
    if kubelet_policy not in KUBELET_POLICIES:
        errors.append(FieldError("kubeletPolicy", f"must be one of {', '.join(KUBELET_POLICIES)}, "
                                                  f"not {kubelet_policy!r}"))
        kubelet_policy = "legacy"
    elif "kubelet" in backends and kubelet_policy == "none":
        errors.append(FieldError("kubeletPolicy", "the kubelet backend means the kubelet protects requests: "
                                                  "use legacy or tiered"))
    scheduler_name, route_protected = "", False
    scheduling = raw.get("scheduling", {})
    if not isinstance(scheduling, dict):
        errors.append(FieldError("scheduling", "must be a mapping with schedulerName and routeKubeletProtected"))
    else:
        errors.extend(unknown_field_errors(scheduling, _SCHEDULING_KEYS, "scheduling"))
        scheduler_name = scheduling.get("schedulerName", "")
        if scheduler_name == DEFAULT_SCHEDULER or (scheduler_name and (
                not isinstance(scheduler_name, str) or qualified_name_problem(scheduler_name) is not None)):
            errors.append(FieldError("scheduling.schedulerName", "must name a scheduler other than "
                                                                 f"{DEFAULT_SCHEDULER}, e.g. qosgate-scheduler"))
            scheduler_name = ""
        route_protected = scheduling.get("routeKubeletProtected", False)
        if not isinstance(route_protected, bool):
            errors.append(FieldError("scheduling.routeKubeletProtected", "must be true or false"))
            route_protected = False
        elif route_protected and not scheduler_name:
            errors.append(FieldError("scheduling.routeKubeletProtected", "needs scheduling.schedulerName"))

    resources: dict[str, QosResource] = {}
    memory_resources: list[str] = []
    raw_resources = raw.get("resources")
    if not isinstance(raw_resources, list) or not raw_resources:
        errors.append(FieldError("resources", "must be a non-empty list"))
        raw_resources = []
    for i, raw_resource in enumerate(raw_resources):
        path = f"resources[{i}]"
        if not isinstance(raw_resource, dict):
            errors.append(FieldError(path, "must be an object with name and classes"))
            continue
        errors.extend(unknown_field_errors(raw_resource, _RESOURCE_KEYS, path))
        raw_name = raw_resource.get("name")
        problem = qualified_name_problem(raw_name)
        if problem or not isinstance(raw_name, str):
            errors.append(FieldError(f"{path}.name", problem or "must be a string"))
            continue
        name = raw_name
        if name.startswith(RESERVED_PREFIXES):
            errors.append(FieldError(f"{path}.name", f"{name!r}: the k8s.io/ and kubernetes.io/ prefixes are "
                                                     "reserved upstream"))
            continue
        if name in resources:
            errors.append(FieldError(f"{path}.name", f"resource {name!r} is defined more than once"))
            continue
        raw_classes = raw_resource.get("classes")
        if not isinstance(raw_classes, list) or not raw_classes:
            errors.append(FieldError(f"{path}.classes", "must be a non-empty list"))
            continue
        classes: dict[str, QosClass] = {}
        memory = False
        for j, raw_class in enumerate(raw_classes):
            qos_class = _parse_class(raw_class, f"{path}.classes[{j}]", errors)
            if qos_class is None:
                continue
            if qos_class.name in classes:
                errors.append(FieldError(f"{path}.classes[{j}].name",
                                         f"class {qos_class.name!r} is defined more than once"))
                continue
            classes[qos_class.name] = qos_class
            memory = memory or bool(_MEMORY_KEYS & set(raw_class))
        resources[name] = QosResource(name=name, classes=classes, memory=memory)
        if memory:
            memory_resources.append(name)
    if len(memory_resources) > 1:
        errors.append(FieldError("resources", "only one resource may give its classes memory settings, found: "
                                              + ", ".join(memory_resources)))
    if errors:
        raise InvalidError(FieldError(f"{source}: {e.path}" if e.path else source, e.message) for e in errors)
    return Catalog(resources=resources, backends=tuple(backends), protectable_percent=protectable_percent,
                   memory_resource=memory_resources[0] if memory_resources else None,
                   kubelet_policy=str(kubelet_policy), scheduler_name=str(scheduler_name),
                   route_kubelet_protected=bool(route_protected))


def load_catalog_yaml(text: str, source: str = "catalog") -> Catalog:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidError.single(source, f"not valid YAML: {exc}") from None
    return parse_catalog(raw, source)


def catalog_from_configmap(configmap: Mapping[str, Any]) -> Catalog:
    metadata = configmap.get("metadata") or {}
    source = f"configmap {metadata.get('namespace', '')}/{metadata.get('name', '')}"
    data = configmap.get("data") or {}
    if CATALOG_DATA_KEY not in data:
        raise InvalidError.single(f"{source}: data", f"missing key {CATALOG_DATA_KEY!r}")
    return load_catalog_yaml(data[CATALOG_DATA_KEY], f"{source}: data[{CATALOG_DATA_KEY}]")


DEFAULT_CATALOG_YAML = """\
protectablePercent: 90
backends: [nri-memory-qos]
resources:
- name: memory-qos
  classes:
  - name: gold
    memoryMinPercent: 100
    throttlePercent: 0
    swap: false
  - name: silver
    memoryMinPercent: 50
    throttlePercent: 90
    swap: false
  - name: bronze
    memoryMinPercent: 0
    nriClass: bronze
"""

DEFAULT_CATALOG = load_catalog_yaml(DEFAULT_CATALOG_YAML, "built-in catalog")


CatalogListener = Callable[[Catalog], None]


class CatalogHolder:
    """The catalog in force. A rejected update leaves the last valid catalog in place (architecture §4.4).

    Listeners hear every catalog that comes into force, on the updating thread, after `current` changed.
    """

    def __init__(self, catalog: Catalog = DEFAULT_CATALOG, source: str = "built-in catalog"):
        self.current = catalog
        self.source = source
        self.last_error: str | None = None
        self._listeners: list[CatalogListener] = []

    def subscribe(self, listener: CatalogListener) -> None:
        self._listeners = [*self._listeners, listener]

    def replace(self, catalog: Catalog, source: str) -> None:
        # One attribute assignment: readers on other threads see the old or the new catalog, never a mix.
        self.current = catalog
        self.source = source
        self.last_error = None
        for listener in self._listeners:
            listener(catalog)

    def update_from_configmap(self, configmap: Mapping[str, Any], source: str | None = None) -> str | None:
        """Swap in the ConfigMap's catalog; returns the error (and keeps the old catalog) when invalid."""
        try:
            catalog = catalog_from_configmap(configmap)
        except InvalidError as exc:
            self.last_error = str(exc)
            return self.last_error
        self.replace(catalog, source or self.source)
        return None


class CatalogMemo(Generic[T]):
    """Answers remembered per catalog: a bounded LRU from a key (bytes holding everything the answer reads)
    to the answer and the catalog it was decided with. A lookup with another catalog misses, so an edit is
    never answered from memory. Thread-safe (the webhook decides on the loop and in worker threads).

    Admission sees the same few pod shapes (the replicas of each workload) over and over: remembering turns
    their decision into one dictionary lookup. Bounded in entries and in bytes: a remembered answer grows with
    its pod, and a tenant sending many distinct big pods must not grow the process. The key's length stands
    for the entry's size (both grow with the containers; the entry measured ~17× its key for 300-container
    pods, so 1 MiB of keys holds at most ~20 MB); a key above `max_bytes // 256` (a pod of some 80 containers)
    is never remembered: such pods are rare, and deciding them afresh is what the offloading path is for.
    Ordinary pods' keys are a few hundred bytes, so the 2048 entries fit the byte budget."""

    def __init__(self, size: int = 2048, max_bytes: int = 2**20) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 256
        self._entries: OrderedDict[bytes, tuple[Catalog, T]] = OrderedDict()
        self._bytes = 0  # Σ key length of the entries
        self._lock = threading.Lock()

    def get(self, key: bytes, catalog: Catalog) -> T | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] is not catalog:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: bytes, catalog: Catalog, value: T) -> None:
        if len(key) > self.max_entry_bytes:
            return
        with self._lock:
            # Holding the catalog in the entry keeps the identity check sound (no id reuse while cached).
            if key not in self._entries:
                self._bytes += len(key)
            self._entries[key] = (catalog, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size or self._bytes > self.max_bytes:
                evicted, _ = self._entries.popitem(last=False)
                self._bytes -= len(evicted)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def key_bytes(self) -> int:
        return self._bytes
