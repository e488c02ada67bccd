"""The kubelet's cgroup v2 layout, read from a snapshot of cgroupfs (pure: dicts of file contents in, a tree out).

Two cgroup drivers name the same hierarchy differently (architecture §7.3):

    systemd   kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, - as _>.slice/<runtime>-<id>.scope
              kubepods.slice/kubepods-pod<uid with _>.slice/<runtime>-<id>.scope          (Guaranteed)
    cgroupfs  kubepods/burstable/pod<uid>/<id>   and   kubepods/pod<uid>/<id>                 (Guaranteed)

with `<runtime>` `cri-containerd` (containerd) or `crio` (CRI-O; its `crio-conmon-<id>.scope` monitor cgroups
are not containers). The agent writes only the three managed levels — the kubepods root, the QoS slices and
the pod cgroups — never a container's own cgroup (that belongs to the runtime / the NRI plugin).

A snapshot is what `CgroupFS.snapshot` returns: {directory relative to the kubepods root ("" = the root):
{file name: content, or None when absent/unreadable}}. A value that cannot be read is kept as None and
reported, never guessed: callers must treat it as unknown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

PAGE_SIZE = 4096
# What the kernel shows as "max" (PAGE_COUNTER_MAX pages); any figure at or above it is written as "max".
UNLIMITED = (2**63 - 1) // PAGE_SIZE * PAGE_SIZE

MEMORY_MIN = "memory.min"
MEMORY_LOW = "memory.low"
MEMORY_CURRENT = "memory.current"
SNAPSHOT_FILES = (MEMORY_MIN, MEMORY_LOW, MEMORY_CURRENT)

SYSTEMD, CGROUPFS = "systemd", "cgroupfs"
KUBEPODS_DIRS = {SYSTEMD: "kubepods.slice", CGROUPFS: "kubepods"}
GUARANTEED, BURSTABLE, BESTEFFORT = "guaranteed", "burstable", "besteffort"
QOS_CLASSES = (GUARANTEED, BURSTABLE, BESTEFFORT)

_RUNTIME_PREFIXES = ("cri-containerd-", "crio-", "docker-")
_NOT_CONTAINERS = ("crio-conmon-",)
_SYSTEMD_POD = re.compile(r"kubepods(?:-(burstable|besteffort))?-pod([0-9a-fA-F_]+)\.slice")
_CGROUPFS_POD = re.compile(r"pod([0-9a-fA-F-]+)")


class Kind(Enum):
    ROOT = "root"  # kubepods(.slice): also the Guaranteed QoS cgroup
    QOS = "qos"  # kubepods-burstable.slice / kubepods-besteffort.slice
    POD = "pod"
    CONTAINER = "container"
    OTHER = "other"  # anything else (conmon, nested cgroups, unknown names): observed, never written

    @property
    def managed(self) -> bool:
        """The levels the agent keeps covering their children."""
        return self in (Kind.ROOT, Kind.QOS, Kind.POD)


@dataclass(frozen=True, slots=True)
class Identity:
    kind: Kind
    qos: str | None = None
    pod_uid: str | None = None
    container_id: str | None = None


def kubepods_dir(driver: str) -> str:
    return KUBEPODS_DIRS[driver]


def qos_dir(driver: str, qos: str) -> str:
    """The QoS cgroup relative to the kubepods root ("" for Guaranteed, whose pods sit in the root)."""
    if qos == GUARANTEED:
        return ""
    return f"kubepods-{qos}.slice" if driver == SYSTEMD else qos


def pod_dir(driver: str, qos: str, uid: str) -> str:
    """A pod's cgroup relative to the kubepods root, as the kubelet names it."""
    if driver == SYSTEMD:
        uid_ = uid.replace("-", "_")
        if qos == GUARANTEED:
            return f"kubepods-pod{uid_}.slice"
        return f"kubepods-{qos}.slice/kubepods-{qos}-pod{uid_}.slice"
    return f"pod{uid}" if qos == GUARANTEED else f"{qos}/pod{uid}"


def _container_id(name: str, driver: str) -> str | None:
    if name.startswith(_NOT_CONTAINERS):
        return None
    if driver == SYSTEMD:
        if not name.endswith(".scope"):
            return None
        stem = name[: -len(".scope")]
        for prefix in _RUNTIME_PREFIXES:
            if stem.startswith(prefix) and len(stem) > len(prefix):
                return stem[len(prefix):]
        return None
    for prefix in _RUNTIME_PREFIXES:  # CRI-O with the cgroupfs driver names its cgroups crio-<id>
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix):]
    return name or None


def _systemd_pod(name: str, qos: str | None) -> str | None:
    match = _SYSTEMD_POD.fullmatch(name)
    if match is None or (match.group(1) or None) != (None if qos in (None, GUARANTEED) else qos):
        return None
    return match.group(2).replace("_", "-")


def classify(rel: str, driver: str) -> Identity:
    """What the cgroup at `rel` (relative to the kubepods root; "" = the root) is, for the given driver."""
    if rel == "":
        return Identity(Kind.ROOT, GUARANTEED)
    parts = rel.split("/")
    first = parts[0]
    qos: str | None = None
    rest = parts
    if driver == SYSTEMD and first in ("kubepods-burstable.slice", "kubepods-besteffort.slice"):
        qos = first[len("kubepods-"):-len(".slice")]
        rest = parts[1:]
    elif driver == CGROUPFS and first in (BURSTABLE, BESTEFFORT):
        qos = first
        rest = parts[1:]
    if qos is not None and not rest:
        return Identity(Kind.QOS, qos)
    pod_qos = qos or GUARANTEED
    if driver == SYSTEMD:
        uid = _systemd_pod(rest[0], qos)
    else:
        match = _CGROUPFS_POD.fullmatch(rest[0])
        uid = match.group(1) if match else None
    if uid is None:
        return Identity(Kind.OTHER, qos)
    if len(rest) == 1:
        return Identity(Kind.POD, pod_qos, uid)
    if len(rest) == 2:
        cid = _container_id(rest[1], driver)
        if cid is not None:
            return Identity(Kind.CONTAINER, pod_qos, uid, cid)
    return Identity(Kind.OTHER, pod_qos, uid)


def parse_bytes(text: str | None) -> int | None:
    """A memory.min/low/current file: a decimal byte count or "max"; None for anything else (garbage,
    unreadable, negative, absurdly long) — the caller must treat it as unknown."""
    if text is None:
        return None
    value = text.strip()
    if value == "max":
        return UNLIMITED
    if not value.isdigit() or not value.isascii() or len(value) > 20:
        return None
    return min(int(value), UNLIMITED)


def format_bytes_file(value: int) -> str:
    return "max" if value >= UNLIMITED else str(value)


def page_up(value: int) -> int:
    return min(UNLIMITED, -(-value // PAGE_SIZE) * PAGE_SIZE)


def page_down(value: int) -> int:
    return value // PAGE_SIZE * PAGE_SIZE


@dataclass(slots=True)
class Cgroup:
    path: str  # relative to the kubepods root; "" = the root
    identity: Identity
    min: int | None  # None = unreadable or garbage: unknown
    low: int | None
    current: int | None
    children: list[str] = field(default_factory=list)

    @property
    def kind(self) -> Kind:
        return self.identity.kind

    @property
    def parent(self) -> str | None:
        if self.path == "":
            return None
        return self.path.rpartition("/")[0]


@dataclass(slots=True)
class KubeTree:
    """The kubepods subtree: every cgroup by path, parents before children in `order`."""

    driver: str
    nodes: dict[str, Cgroup]
    order: list[str]  # pre-order: every parent before its children
    problems: list[str] = field(default_factory=list)

    @property
    def root(self) -> Cgroup:
        return self.nodes[""]

    def pods(self) -> dict[str, Cgroup]:
        return {n.identity.pod_uid: n for n in self.nodes.values()
                if n.kind is Kind.POD and n.identity.pod_uid is not None}

    def containers(self) -> dict[str, Cgroup]:
        return {n.identity.container_id: n for n in self.nodes.values()
                if n.kind is Kind.CONTAINER and n.identity.container_id is not None}


def detect_driver(top_level_dirs: list[str] | set[str]) -> str | None:
    """systemd when kubepods.slice exists at the top of the hierarchy, cgroupfs for kubepods; None if neither."""
    if KUBEPODS_DIRS[SYSTEMD] in top_level_dirs:
        return SYSTEMD
    if KUBEPODS_DIRS[CGROUPFS] in top_level_dirs:
        return CGROUPFS
    return None


def parse_tree(snapshot: Mapping[str, Mapping[str, str | None]], driver: str) -> KubeTree:
    """Build the tree from a snapshot of the kubepods subtree. Directories whose parent is missing from the
    snapshot (it vanished between listing and reading) are dropped: they will be seen on the next pass."""
    problems: list[str] = []
    nodes: dict[str, Cgroup] = {}
    for rel in sorted(snapshot, key=lambda p: (p.count("/") if p else -1, p)):
        files = snapshot[rel]
        parent = rel.rpartition("/")[0] if rel else None
        if parent is not None and parent not in nodes:
            continue
        raw_min = files.get(MEMORY_MIN)
        node = Cgroup(rel, classify(rel, driver), parse_bytes(raw_min), parse_bytes(files.get(MEMORY_LOW)),
                      parse_bytes(files.get(MEMORY_CURRENT)))
        if node.min is None:
            shown = "unreadable" if raw_min is None else f"garbage {raw_min.strip()[:40]!r}"
            problems.append(f"{kubepods_dir(driver)}/{rel}".rstrip("/") + f"/memory.min: {shown}")
        nodes[rel] = node
        if parent is not None:
            nodes[parent].children.append(rel)
    if "" not in nodes:
        nodes[""] = Cgroup("", Identity(Kind.ROOT, GUARANTEED), None, None, None)
        problems.append(f"{kubepods_dir(driver)}: missing")
    order: list[str] = []
    stack = [""]
    while stack:
        path = stack.pop()
        order.append(path)
        stack.extend(reversed(nodes[path].children))
    return KubeTree(driver, nodes, order, problems)
