"""`qosgate status` (also `kubectl qosgate status`): protection at a glance — per node, per namespace, the extender.

One paged LIST per kind (nodes, pods, node report Leases, quota ConfigMaps, the catalog, the extender's Lease),
fed through the very code the extender and the webhook decide with (watch-cache stores, ExtenderState,
QuotaSource), so what it prints is what they count. Reservations in flight live only in the extender
leader's memory; it publishes them on its Lease at every renewal, and they are added here.

Errors name what is missing (no agent installed, no access to a kind) and the rest is still shown — unless
nothing true could be shown: no answer from the API server, credentials it refuses (401), or no access to
anything at all (403 on every read) end the command with a one-line error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from qosgate.core.annotations import CATALOG_CONFIGMAP, EXTENDER_STATE, LEADER_URL, QUOTA_LABEL, SYSTEM_NAMESPACE
from qosgate.core.catalog import DEFAULT_CATALOG, Catalog
from qosgate.core.errors import QosgateError
from qosgate.core.nodereport import LEASE_SELECTOR, parse_time
from qosgate.core.quantity import format_bytes
from qosgate.core.quota import QUOTA_LABEL_VALUE
from qosgate.extender.state import ExtenderState, NodeSummary
from qosgate.extender.wiring import ExtenderConfig, settings_from
from qosgate.kube.catalog import fetch_catalog
from qosgate.kube.rest import ApiError, KubeError, TransportError, request_json
from qosgate.webhook.quota.source import QuotaSource

if TYPE_CHECKING:
    from qosgate.kube.store import ObjectStore
    from qosgate.kube.transport import KubeClient

BAR_WIDTH = 20
DEFAULT_LEASE = "qosgate-extender"
QUOTA_SELECTOR = f"{QUOTA_LABEL}={QUOTA_LABEL_VALUE}"


@dataclass
class Status:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    namespaces: list[dict[str, Any]] = field(default_factory=list)
    extender: dict[str, Any] = field(default_factory=dict)
    catalog: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Problem:
    """A read that failed but leaves the rest worth showing; `forbidden` when the API server answered 403."""

    text: str
    what: str = ""
    forbidden: bool = False


def lease_ref(value: str) -> str:
    """`--lease NAMESPACE/NAME`: a missing part would read a Lease nobody named and report it has no holder."""
    namespace, slash, name = value.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAMESPACE/NAME "
                                         f"(e.g. {SYSTEM_NAMESPACE}/{DEFAULT_LEASE})")
    return value


def add_status_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    status = subparsers.add_parser("status", help="protectable vs accounted vs kernel-protected memory per node, "
                                                  "quota use per namespace, the extender leader",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account, then "
                                                 "$KUBECONFIG, then ~/.kube/config)")
    status.add_argument("--context", help="kubeconfig context")
    status.add_argument("-l", "--selector", default="", help="only nodes matching this label selector")
    status.add_argument("-n", "--namespace", default="", help="only this namespace's quotas")
    status.add_argument("--limit", type=int, default=25,
                        help="nodes shown in text output, tightest first (0 = all; json/yaml always list all)")
    status.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")
    status.add_argument("--lease", type=lease_ref, default=f"{SYSTEM_NAMESPACE}/{DEFAULT_LEASE}",
                        metavar="NAMESPACE/NAME",
                        help="the extender's leader-election Lease NAMESPACE/NAME")
    status.set_defaults(func=run_status)
    return status


def _unreachable(api: KubeClient, exc: TransportError) -> QosgateError:
    return QosgateError(f"cannot reach the API server {api.server}: {exc}")


def _fatal(api: KubeClient, exc: KubeError) -> QosgateError | None:
    """The failures after which nothing true can be shown, as the command's one-line error; None for others.

    Every read goes to the same server with the same credentials, so no answer or a refused credential on one
    read means the same on all of them: a report of empty sections would only hide that.
    """
    if isinstance(exc, TransportError):
        return _unreachable(api, exc)
    if isinstance(exc, ApiError) and exc.status == 401:
        return QosgateError(f"the API server {api.server} refused the credentials (HTTP 401 "
                            f"{exc.reason or 'Unauthorized'}): check the kubeconfig user's token or certificate")
    return None


def _list_into(store: Any, api: KubeClient, path: str, label_selector: str = "", field_selector: str = "",
               what: str = "") -> _Problem | None:
    """One paged LIST into `store` through the informer's own code; returns a problem instead of raising.

    Raises QosgateError when the whole command cannot go on (see `_fatal`), or for a selector the API server
    rejects (400): an empty table would read as "no node matches".
    """
    from qosgate.kube.informer import Informer

    informer = Informer(api, path, store, label_selector=label_selector or None,
                        field_selector=field_selector or None, name=what or path)
    try:
        informer.list_once()
    except KubeError as exc:
        store.replace([], "")
        fatal = _fatal(api, exc)
        if fatal is not None:
            raise fatal from None
        if isinstance(exc, ApiError) and exc.status == 400 and label_selector:
            raise QosgateError(f"invalid label selector {label_selector!r} for {what}: "
                               f"{exc.message or exc.reason}") from None
        if isinstance(exc, ApiError) and exc.status == 403:
            return _Problem(f"no access to {what}: {exc.message or exc.reason} (needs list on {what})", what,
                            forbidden=True)
        return _Problem(f"cannot list {what}: {exc}", what)
    return None


def _bar(used: int, total: int) -> str:
    if total <= 0:
        return "[" + "?" * BAR_WIDTH + "]"
    filled = min(BAR_WIDTH, max(0, round(used * BAR_WIDTH / total)))
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"


def _node_row(summary: NodeSummary) -> dict[str, Any]:
    row = asdict(summary)
    row.update(accounted=summary.accounted, headroom=summary.headroom)
    row["problems"] = list(summary.problems)
    return row


def _extender(api: KubeClient, lease_ref: str,
              now: datetime) -> tuple[dict[str, Any], dict[str, int], _Problem | None]:
    namespace, _, name = lease_ref.partition("/")
    what = f"the extender Lease {lease_ref}"
    try:
        lease = request_json(api, "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
    except KubeError as exc:
        fatal = _fatal(api, exc)
        if fatal is not None:
            raise fatal from None
        if isinstance(exc, ApiError) and exc.not_found:
            return {"leader": None}, {}, _Problem(f"no extender Lease {lease_ref}: is the extender running with "
                                                  "--leader-elect?", what)
        forbidden = isinstance(exc, ApiError) and exc.status == 403
        return {"leader": None}, {}, _Problem(f"cannot read {what}: {exc}", what, forbidden)
    spec = lease.get("spec") or {}
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    renewed = parse_time(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds") or 0
    age = (now - renewed).total_seconds() if renewed is not None else None
    holder = spec.get("holderIdentity") or None
    current = holder is not None and age is not None and age <= duration
    try:
        state = orjson.loads(annotations.get(EXTENDER_STATE) or "{}")
    except orjson.JSONDecodeError:
        state = {}
    reserved = state.get("reserved") if isinstance(state.get("reserved"), dict) and current else {}
    info = {"leader": holder if current else None, "lastRenewalSecondsAgo": round(age, 1) if age is not None else None,
            "transitions": spec.get("leaseTransitions"), "url": annotations.get(LEADER_URL),
            "synced": state.get("synced") if current else None, "caughtUp": state.get("caughtUp") if current else None}
    problem = None if current else _Problem("the extender Lease has no current holder: no replica is deciding "
                                            "(scheduling of pods qosgate accounts for is paused)", what)
    return info, {k: int(v) for k, v in (reserved or {}).items() if isinstance(v, int)}, problem


def _quota_configmaps(api: KubeClient, namespace: str) -> tuple[ObjectStore, list[_Problem | None]]:
    """The quota ConfigMaps that can apply to `namespace` (every namespace when empty).

    A namespace without quota ConfigMaps of its own gets the cluster default ones from the system namespace,
    so `-n` lists those too (two namespaced LISTs: a namespace-scoped user may not list cluster-wide).
    """
    from qosgate.kube.store import ObjectStore

    quotas = ObjectStore()
    if not namespace:
        return quotas, [_list_into(quotas, api, "/api/v1/configmaps", QUOTA_SELECTOR, "", "quota configmaps")]
    found: list[dict[str, Any]] = []
    problems = []
    for space in dict.fromkeys((namespace, SYSTEM_NAMESPACE)):  # -n of the system namespace: one LIST
        listed = ObjectStore()
        what = f"quota configmaps in {space}" if space == namespace else \
            f"cluster-default quota configmaps in {space}"
        problems.append(_list_into(listed, api, f"/api/v1/namespaces/{space}/configmaps", QUOTA_SELECTOR, "", what))
        found += listed.records()
    quotas.replace(found, "")
    return quotas, problems


def _refuse_if_nothing_readable(api: KubeClient, problems: Sequence[_Problem | None]) -> None:
    """Every read of the cluster forbidden (403): the sections would all be empty, which is no status at all."""
    if problems and all(p is not None and p.forbidden for p in problems):
        whats = ", ".join(p.what for p in problems if p is not None)
        raise QosgateError(f"no access to anything status reads on the API server {api.server} ({whats}): "
                           "the credentials in use need get/list on nodes, pods, leases and configmaps")


def collect(api: KubeClient, selector: str = "", namespace: str = "",
            lease: str = f"{SYSTEM_NAMESPACE}/{DEFAULT_LEASE}",
            now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Status:
    from qosgate.kube.store import NodeStore, ObjectStore, PodStore

    status = Status()
    catalog: Catalog = DEFAULT_CATALOG
    try:
        found = fetch_catalog(api, SYSTEM_NAMESPACE, CATALOG_CONFIGMAP)
        if found is not None:
            catalog = found
        else:
            status.warnings.append(f"no valid catalog ConfigMap {SYSTEM_NAMESPACE}/{CATALOG_CONFIGMAP}: "
                                   "showing the built-in catalog's rules")
    except QosgateError as exc:
        status.warnings.append(f"{exc}; showing the built-in catalog's rules")
    except TransportError as exc:  # fetch_catalog words the server's answers, not their absence
        raise _unreachable(api, exc) from None
    pods, nodes, reports = PodStore(catalog.accounting), NodeStore(), ObjectStore()
    problems = [_list_into(store, api, path, labels, fields, what) for store, path, labels, fields, what in (
        (nodes, "/api/v1/nodes", selector, "", "nodes"),
        (pods, "/api/v1/pods", "", "status.phase!=Succeeded,status.phase!=Failed", "pods"),
        (reports, f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NAMESPACE}/leases", LEASE_SELECTOR, "",
         "node reports (leases)"))]
    quotas, quota_problems = _quota_configmaps(api, namespace)
    problems += quota_problems
    extender, reserved, problem = _extender(api, lease, now())
    problems.append(problem)
    _refuse_if_nothing_readable(api, problems)
    status.warnings += [p.text for p in problems if p is not None]
    if nodes.records() and not reports.records():
        status.warnings.append("no node agent reports: is the qosgate agent DaemonSet installed? "
                               "(kernel-protected figures are unknown; nodes count with the catalog's policy)")
    status.extender = extender
    state = ExtenderState(pods, nodes, settings_from(catalog, ExtenderConfig()), reports=reports, wall_clock=now)
    try:
        rows = []
        for summary in state.node_summaries():
            if summary.name in reserved:
                summary = NodeSummary(**{**asdict(summary), "reserved": reserved[summary.name],
                                         "problems": summary.problems})
            rows.append(summary)
    finally:
        state.close()
    rows.sort(key=lambda s: (s.headroom if s.protectable >= 0 else -2**62, s.name))
    status.nodes = [_node_row(s) for s in rows]
    source = QuotaSource(quotas)
    spaces = set(pods.namespaces()) | {r["metadata"].get("namespace", "") for r in quotas.records()}
    for ns in sorted(s for s in spaces if not namespace or s == namespace):
        lookup = source.quotas_for(ns)
        usage = pods.namespace_usage(ns)
        classes = []
        for quota in lookup.quotas:
            for level in ("pod", "container"):
                for resource, limits in quota.limits(level).items():
                    for klass, limit in limits.items():
                        used = usage.get((resource, klass))
                        count = (used.pods if level == "pod" else used.containers) if used else 0
                        classes.append({"resource": resource, "class": klass, "level": level, "used": count,
                                        "capacity": limit.capacity or None,
                                        "memoryMin": used.memory_min if used else 0,
                                        "maxMemoryMin": limit.max_memory_min})
        if classes or lookup.errors:
            status.namespaces.append({"namespace": ns, "classes": classes, "errors": list(lookup.errors)})
    status.catalog = {"protectablePercent": catalog.protectable_percent, "kubeletPolicy": catalog.kubelet_policy,
                      "backends": list(catalog.backends), "schedulerName": catalog.scheduler_name or None}
    return status


def render_text(status: Status, limit: int) -> str:
    lines = []
    leader = status.extender.get("leader")
    if leader:
        lines.append(f"extender: leader {leader} (renewed {status.extender.get('lastRenewalSecondsAgo')}s ago, "
                     f"caches {'synced' if status.extender.get('synced') else 'NOT synced'}, "
                     f"{'caught up' if status.extender.get('caughtUp') else 'catching up'})")
    else:
        lines.append("extender: NO LEADER")
    shown = status.nodes if limit <= 0 else status.nodes[:limit]
    lines.append("")
    lines.append(f"{'NODE':<28} {'PROTECTABLE':>11} {'ACCOUNTED':>10} {'KERNEL':>9} {'DRIFT':>8} {'HEADROOM':>9}  "
                 f"{'USE':<{BAR_WIDTH + 2}} POLICY  REPORT CLASSES")
    for row in shown:
        protectable = row["protectable"]
        kernel = "-" if row["kernel_protected"] is None else format_bytes(row["kernel_protected"])
        drift = "-" if row["drift"] is None else format_bytes(row["drift"])
        classes = "all" if row["classes"] is None else (",".join(row["classes"]) or "none")
        lines.append(
            f"{row['name'][:28]:<28} {format_bytes(protectable) if protectable >= 0 else 'UNREADABLE':>11} "
            f"{format_bytes(row['accounted']):>10} {kernel:>9} {drift:>8} "
            f"{format_bytes(row['headroom']) if protectable >= 0 else '-':>9}  "
            f"{_bar(row['accounted'], protectable):<{BAR_WIDTH + 2}} {row['policy']:<7} {row['report']:<6} "
            f"{classes[:40]}")
    if len(shown) < len(status.nodes):
        lines.append(f"… {len(status.nodes) - len(shown)} more nodes with more headroom (--limit 0 shows all)")
    if status.namespaces:
        lines.append("")
        lines.append(f"{'NAMESPACE':<24} {'RESOURCE=CLASS':<28} {'LEVEL':<9} {'USED':>6} {'CAPACITY':>8}  USE")
        for space in status.namespaces:
            for item in space["classes"]:
                capacity = item["capacity"]
                lines.append(f"{space['namespace'][:24]:<24} {(item['resource'] + '=' + item['class'])[:28]:<28} "
                             f"{item['level']:<9} {item['used']:>6} {capacity or 'unlim.':>8}  "
                             f"{_bar(item['used'], capacity) if capacity else ''}")
            for error in space["errors"]:
                lines.append(f"{space['namespace'][:24]:<24} INVALID QUOTA: {error}")
    for warning in status.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def run_status(args: argparse.Namespace) -> int:
    from qosgate.kube.config import load_api_client

    if args.limit < 0:
        raise QosgateError("--limit must be 0 (all) or more")
    api = load_api_client(args.kubeconfig, args.context)
    status = collect(api, args.selector, args.namespace, args.lease)
    document = asdict(status)
    if args.output == "json":
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.output == "yaml":
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False))
    else:
        sys.stdout.write(render_text(status, args.limit) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`kubectl-qosgate`: kubectl runs the plugin with the arguments after `kubectl qosgate`."""
    from qosgate.cli.main import main as qosgate_main

    return qosgate_main(argv)
