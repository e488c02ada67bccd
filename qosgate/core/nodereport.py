"""The node agent's per-node report: schema, wire form, Lease naming and staleness (pure).

Carrier (decided for the extender): one coordination.k8s.io/v1 Lease per node in `qosgate-system`, named by
`lease_name(node)`, labelled `app.kubernetes.io/name: qosgate` + `qosgate.io/node-report: "true"`;
`spec.holderIdentity` = the node name, `spec.renewTime` = the heartbeat (MicroTime),
`spec.leaseDurationSeconds` = the staleness bound (3 × report interval); the report is the compact JSON in
the annotation `qosgate.io/node-report`:

    {"schema":1,"node":"n1","observedAt":"2026-10-01T12:00:00Z","cgroupV2":true,"memoryController":true,
     "recursiveProt":true,"kubeletPolicy":"tiered","kubeletPolicySource":"observed",
     "protectableBytes":…,"kubepodsMinBytes":…,"demandedBytes":…,"kernelProtectedBytes":…,
     "kernelProtectedNowBytes":…,"outsideKubepodsMinBytes":…,"accountedBytes":…,"driftBytes":…,
     "overcommitBytes":…,"nriHonoured":true,"nriMismatches":0,"offeredClasses":"memory-qos=gold,silver",
     "offeredClassesSource":"nri-config","problems":[]}

`parse` never raises: garbage gives a problem string instead of a report. Readers accept unknown fields
(newer agents may add some) but refuse a newer *schema* number, which is only bumped for incompatible changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from qosgate.core.annotations import APP_NAME, APP_NAME_LABEL, NODE_REPORT, NODE_REPORT_LABEL, SYSTEM_NAMESPACE

SCHEMA_VERSION = 1
LEASE_PREFIX = "qosgate-node-"
MAX_NAME = 253
MAX_REPORT_BYTES = 64 * 1024
MAX_PROBLEMS = 20
MAX_PROBLEM_CHARS = 240
POLICIES = ("none", "legacy", "tiered", "unknown")
# A byte figure that moved less than this is not worth a Lease write before the heartbeat is due.
MATERIAL_BYTES = 1 << 20
MATERIAL_FRACTION = 0.01


def lease_name(node: str) -> str:
    """`qosgate-node-<node>`; past 253 characters `qosgate-node-` + first 40 chars + `-` + 16 hex of sha256."""
    name = LEASE_PREFIX + node
    if len(name) <= MAX_NAME:
        return name
    return f"{LEASE_PREFIX}{node[:40]}-{hashlib.sha256(node.encode()).hexdigest()[:16]}"


LEASE_LABELS = {APP_NAME_LABEL: APP_NAME, NODE_REPORT_LABEL: "true"}
LEASE_NAMESPACE = SYSTEM_NAMESPACE
LEASE_SELECTOR = f"{NODE_REPORT_LABEL}=true"


@dataclass(frozen=True, slots=True)
class NodeReport:
    node: str
    observed_at: str  # RFC 3339, UTC
    cgroup_v2: bool
    memory_controller: bool
    recursive_prot: bool | None
    kubelet_policy: str  # none | legacy | tiered | unknown
    protectable_bytes: int  # what the node can protect (0 when it cannot enforce)
    kubepods_min_bytes: int  # memory.min of the kubepods root, as the kernel holds it
    demanded_bytes: int  # Σ memory.min the kubepods subtree asks for (each level max(own, Σ children))
    kernel_protected_bytes: int  # effective protection of kubepods' leaves if each used its memory.min
    kernel_protected_now_bytes: int  # the same with today's usage (memory.current)
    outside_kubepods_min_bytes: int  # Σ memory.min of the other top-level cgroups (system.slice …)
    accounted_bytes: int  # Σ qosgate.io/memory-min of the active pods bound here, as the agent knows them
    drift_bytes: int  # accounted bytes of started pods the kernel does not protect
    overcommit_bytes: int  # demand at kubepods beyond protectable_bytes
    nri_honoured: bool | None  # None: no container carried a memory.min NRI annotation
    nri_mismatches: int
    offered_classes: str | None  # qosgate.core.nodeoffer syntax; None = unknown
    problems: tuple[str, ...] = ()
    kubelet_policy_source: str = "observed"  # observed | flag
    offered_classes_source: str = "none"  # nri-config | admin | none
    schema: int = SCHEMA_VERSION


_WIRE = {
    "schema": "schema", "node": "node", "observed_at": "observedAt", "cgroup_v2": "cgroupV2",
    "memory_controller": "memoryController", "recursive_prot": "recursiveProt", "kubelet_policy": "kubeletPolicy",
    "kubelet_policy_source": "kubeletPolicySource", "protectable_bytes": "protectableBytes",
    "kubepods_min_bytes": "kubepodsMinBytes", "demanded_bytes": "demandedBytes",
    "kernel_protected_bytes": "kernelProtectedBytes", "kernel_protected_now_bytes": "kernelProtectedNowBytes",
    "outside_kubepods_min_bytes": "outsideKubepodsMinBytes", "accounted_bytes": "accountedBytes",
    "drift_bytes": "driftBytes", "overcommit_bytes": "overcommitBytes", "nri_honoured": "nriHonoured",
    "nri_mismatches": "nriMismatches", "offered_classes": "offeredClasses",
    "offered_classes_source": "offeredClassesSource", "problems": "problems",
}
_BYTES = ("protectable_bytes", "kubepods_min_bytes", "demanded_bytes", "kernel_protected_bytes",
          "kernel_protected_now_bytes", "outside_kubepods_min_bytes", "accounted_bytes", "drift_bytes",
          "overcommit_bytes")
_OPTIONAL_BOOL = ("recursive_prot", "nri_honoured")
_BOOL = ("cgroup_v2", "memory_controller")
_DEFAULTS = {"problems": (), "kubelet_policy_source": "observed", "offered_classes_source": "none",
             "kernel_protected_now_bytes": 0, "demanded_bytes": 0}


def _trim_problems(problems: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    kept = [p[:MAX_PROBLEM_CHARS] for p in list(problems)[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        kept.append(f"... and {len(problems) - MAX_PROBLEMS} more")
    return tuple(kept)


def encode(report: NodeReport) -> str:
    """Compact JSON (problems trimmed to keep the annotation small)."""
    report = replace(report, problems=_trim_problems(report.problems))
    doc = {_WIRE[f.name]: getattr(report, f.name) for f in fields(report)}
    doc["problems"] = list(report.problems)
    return orjson.dumps(doc).decode()


@dataclass(frozen=True, slots=True)
class Parsed:
    report: NodeReport | None
    problem: str | None = None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse(text: object) -> Parsed:
    """The report in `text`, or a problem. Never raises, whatever the input."""
    if not isinstance(text, str | bytes):
        return Parsed(None, f"report must be a JSON string, got {type(text).__name__}")
    if len(text) > MAX_REPORT_BYTES:
        return Parsed(None, f"report is larger than {MAX_REPORT_BYTES} bytes")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Parsed(None, f"report is not JSON: {exc}")
    if not isinstance(doc, dict):
        return Parsed(None, "report must be a JSON object")
    schema = doc.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        return Parsed(None, "report has no integer schema field")
    if schema > SCHEMA_VERSION or schema < 1:
        return Parsed(None, f"report schema {schema} is not supported (this reader knows {SCHEMA_VERSION})")
    values: dict[str, Any] = {}
    problems = []
    for name, wire in _WIRE.items():
        if wire not in doc:
            if name in _DEFAULTS:
                values[name] = _DEFAULTS[name]
                continue
            problems.append(f"{wire} missing")
            continue
        value = doc[wire]
        if name in _BYTES or name in ("nri_mismatches", "schema"):
            ok = _is_int(value) and value >= 0
        elif name in _BOOL:
            ok = isinstance(value, bool)
        elif name in _OPTIONAL_BOOL:
            ok = value is None or isinstance(value, bool)
        elif name == "offered_classes":
            ok = value is None or isinstance(value, str)
        elif name == "kubelet_policy":
            ok = value in POLICIES
        elif name == "problems":
            ok = isinstance(value, list) and all(isinstance(p, str) for p in value)
            value = tuple(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            problems.append(f"{wire} has an invalid value {str(value)[:60]!r}")
        values[name] = value
    if problems:
        return Parsed(None, "report: " + "; ".join(problems))
    return Parsed(NodeReport(**values))


def materially_changed(old: NodeReport | None, new: NodeReport) -> bool:
    """Worth a Lease write before the heartbeat: anything but the timestamp and the usage-based figure, with
    byte figures compared with a tolerance (1 MiB or 1 %, whichever is larger)."""
    if old is None:
        return True
    for f in fields(new):
        name = f.name
        if name in ("observed_at", "kernel_protected_now_bytes"):
            continue
        a, b = getattr(old, name), getattr(new, name)
        if name in _BYTES:
            if abs(a - b) > max(MATERIAL_BYTES, int(max(a, b) * MATERIAL_FRACTION)):
                return True
            # any move across zero (over-commit or drift appearing/clearing) is material
            if (a == 0) != (b == 0):
                return True
        elif a != b:
            return True
    return False


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LeaseReport:
    """A report Lease as the extender should read it."""

    report: NodeReport | None
    fresh: bool  # renewTime + leaseDurationSeconds has not passed (and the report is valid)
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.report is not None and self.fresh


def is_fresh(renew_time: datetime | None, lease_duration_seconds: object, now: datetime) -> bool:
    """A report is current until renewTime + leaseDurationSeconds; without either it is stale."""
    if renew_time is None or not isinstance(lease_duration_seconds, int) or isinstance(lease_duration_seconds, bool):
        return False
    if lease_duration_seconds <= 0:
        return False
    return now <= renew_time + timedelta(seconds=lease_duration_seconds)


def read_lease(lease: Mapping[str, Any] | None, node: str, now: datetime) -> LeaseReport:
    """Validate a report Lease for `node`: its name, holder and the report's node must all name the node
    (the admission policy only guarantees the agent of `node` wrote it), and it must be fresh.
    Anything else is a LeaseReport that is not usable — the caller falls back to its safe figure."""
    if not isinstance(lease, Mapping):
        return LeaseReport(None, False, "no report")
    metadata = lease.get("metadata") if isinstance(lease.get("metadata"), dict) else {}
    spec = lease.get("spec") if isinstance(lease.get("spec"), dict) else {}
    assert isinstance(metadata, dict) and isinstance(spec, dict)
    if metadata.get("name") != lease_name(node):
        return LeaseReport(None, False, f"lease {metadata.get('name')!r} is not {lease_name(node)!r}")
    if spec.get("holderIdentity") != node:
        return LeaseReport(None, False, f"lease holder {spec.get('holderIdentity')!r} is not {node!r}")
    annotations = metadata.get("annotations") if isinstance(metadata.get("annotations"), dict) else {}
    parsed = parse((annotations or {}).get(NODE_REPORT))
    if parsed.report is None:
        return LeaseReport(None, False, parsed.problem)
    if parsed.report.node != node:
        return LeaseReport(None, False, f"report names node {parsed.report.node!r}, not {node!r}")
    fresh = is_fresh(parse_time(spec.get("renewTime")), spec.get("leaseDurationSeconds"), now)
    return LeaseReport(parsed.report, fresh, None if fresh else "report is stale")


def lease_object(report: NodeReport, renew_time: str, lease_duration_seconds: int,
                 resource_version: str | None = None) -> dict[str, Any]:
    """The Lease carrying `report` (renew_time in MicroTime form)."""
    metadata: dict[str, Any] = {"name": lease_name(report.node), "namespace": LEASE_NAMESPACE,
                                "labels": dict(LEASE_LABELS), "annotations": {NODE_REPORT: encode(report)}}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": report.node, "renewTime": renew_time,
                     "leaseDurationSeconds": lease_duration_seconds}}
