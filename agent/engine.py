"""One agent pass: read the tree, decide (qosgate.core.ancestors), write, observe, build the node report.

Runs on whatever `CgroupFS` it is given — the host's /sys/fs/cgroup, a fake tree, the kernel VM — and on an
optional `ClusterView` (the pods bound to this node and the node's configured budget; None with --local).
A pass never raises: every failure becomes a problem line in the report and an error count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from qosgate.agent.cgroupfs import CgroupFS
from qosgate.agent.hostfacts import HostFacts, HostFiles
from qosgate.agent.metrics import ERRORS, PASS_DURATION, WRITES
from qosgate.agent.state import StateFile
from qosgate.core.ancestors import Owned, PodDemand, Write, plan_pass
from qosgate.core.catalog import CatalogHolder
from qosgate.core.cgtree import MEMORY_MIN, SNAPSHOT_FILES, detect_driver, kubepods_dir, parse_bytes, parse_tree
from qosgate.core.nodecaps import memory_controller, offered_classes, parse_nri_config, protectable_bytes
from qosgate.core.nodereport import NodeReport, format_time
from qosgate.core.nodetruth import Figures, infer_kubelet_policy, nri_check, protection_figures
from qosgate.core.podprotection import PodView
from qosgate.core.quantity import format_bytes

log = logging.getLogger("qosgate.agent")

DEFAULT_RESERVE = 256 * 2**20


@dataclass(frozen=True, slots=True)
class PassSettings:
    node: str
    reserve: int = DEFAULT_RESERVE
    protectable_override: int | None = None  # --protectable-bytes: wins over the node's configured budget
    kubelet_policy: str = "observed"  # or none | legacy | tiered (an admin who knows better)
    offered_classes: str | None = None  # admin offer, used when the NRI config cannot be read
    dry_run: bool = False
    # The catalog in force, read once at the start of every pass (budget percent and classes offered agree
    # within a pass); the CLI's holder follows the catalog ConfigMap, so an edit needs no agent restart.
    catalog: CatalogHolder = field(default_factory=CatalogHolder)


class ClusterView(Protocol):
    def pods(self) -> list[PodView] | None:
        """Pods bound to this node; None while unknown (not synced, API down)."""
        ...

    def configured_budget(self, protectable_percent: int) -> int | None:
        """qosgate.io/protectable-memory, else protectable_percent (the catalog's) × allocatable; None when
        unknown."""
        ...

    def admin_offer(self) -> str | None:
        """The node's qosgate.io/qos-classes annotation, if any."""
        ...

    def nri_config_text(self) -> str | None:
        """The NRI plugin's config read through the API (its ConfigMap), when the file is not readable."""
        ...


@dataclass(slots=True)
class PassResult:
    report: NodeReport
    writes: list[Write] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    duration: float = 0.0
    figures: Figures | None = None
    overcommit_detail: str | None = None

    @property
    def ok_writes(self) -> int:
        return len(self.writes) - len(self.failed)


class Agent:
    """Holds what survives between passes: the agent's own writes (state file) and the last result."""

    def __init__(self, fs: CgroupFS, host: HostFiles, settings: PassSettings, state: StateFile | None = None,
                 cluster: ClusterView | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.fs = fs
        self.host = host
        self.settings = settings
        self.state = state or StateFile(None, None)
        self.cluster = cluster
        self.clock = clock
        self.owned: dict[str, Owned] = self.state.load()  # keyed by path relative to the cgroup root
        self.last: PassResult | None = None
        self.passes = 0

    # -- the pass ---------------------------------------------------------------------------------------------

    def run_pass(self) -> PassResult:
        started = self.clock()
        try:
            result = self._pass()
        except Exception as exc:  # a bug must not stop the agent: report it, keep the last good state
            log.exception("agent pass failed")
            ERRORS.labels("pass").inc()
            result = PassResult(self._empty_report([f"pass failed: {type(exc).__name__}: {exc}"]))
        result.duration = self.clock() - started
        PASS_DURATION.observe(result.duration)
        self.last = result
        self.passes += 1
        return result

    def _empty_report(self, problems: list[str], facts: HostFacts | None = None, controllers: bool = False,
                      budget: int = 0) -> NodeReport:
        mount = facts.mount if facts else None
        return NodeReport(
            node=self.settings.node, observed_at=format_time(datetime.now(UTC)),
            cgroup_v2=bool(mount and mount.cgroup2), memory_controller=controllers,
            recursive_prot=mount.recursiveprot if mount else None,
            kubelet_policy=self.settings.kubelet_policy if self.settings.kubelet_policy != "observed" else "unknown",
            kubelet_policy_source="flag" if self.settings.kubelet_policy != "observed" else "observed",
            protectable_bytes=budget, kubepods_min_bytes=0, demanded_bytes=0, kernel_protected_bytes=0,
            kernel_protected_now_bytes=0, outside_kubepods_min_bytes=0, accounted_bytes=0, drift_bytes=0,
            overcommit_bytes=0, nri_honoured=None, nri_mismatches=0, offered_classes=None, problems=tuple(problems))

    def _pass(self) -> PassResult:
        problems: list[str] = []
        catalog = self.settings.catalog.current
        facts = self.host.facts()
        nri = facts.nri
        if nri is None and self.cluster is not None:
            # Refreshes the node info (and the NRI ConfigMap) when due.
            self.cluster.configured_budget(catalog.protectable_percent)
            text = self.cluster.nri_config_text()
            nri = parse_nri_config(text) if text is not None else None
        if nri is None and facts.nri_problem:
            problems.append(facts.nri_problem)
        controllers = memory_controller(self.fs.read("cgroup.controllers"))
        enforceable = facts.mount.cgroup2 and controllers
        if not facts.mount.cgroup2:
            problems.append(f"{self.host.cgroup_root} is not a cgroup v2 mount: nothing can be protected")
        elif not controllers:
            problems.append("the memory controller is not enabled at the cgroup root: nothing can be protected")

        top = self.fs.snapshot("", [MEMORY_MIN], max_depth=1)
        driver = detect_driver({k for k in top if k})
        outside = sum(parse_bytes(files.get(MEMORY_MIN)) or 0 for k, files in top.items()
                      if k and k not in ("kubepods.slice", "kubepods"))
        pods = self.cluster.pods() if self.cluster is not None else None
        if self.cluster is not None and pods is None:
            problems.append("pods bound to this node are not known yet (API unreachable or not synced)")
        pod_list = pods or []
        for pod in pod_list:
            problems.extend(f"pod {pod.key}: {p}" for p in pod.problems)

        configured = self.settings.protectable_override
        if configured is None and self.cluster is not None:
            configured = self.cluster.configured_budget(catalog.protectable_percent)
        budget = protectable_bytes(configured, facts.total_memory, outside, self.settings.reserve, enforceable)
        admin_offer = self.settings.offered_classes
        if admin_offer is None and self.cluster is not None:
            admin_offer = self.cluster.admin_offer()
        offer = offered_classes(catalog, nri, enforceable, admin_offer)

        if driver is None:
            problems.append("no kubepods cgroup (kubepods.slice or kubepods) under the cgroup root")
            report = self._empty_report(problems, facts, controllers, budget)
            return PassResult(_with(report, outside_kubepods_min_bytes=outside, offered_classes=offer.value,
                                    offered_classes_source=offer.source))

        kdir = kubepods_dir(driver)
        tree = parse_tree(self.fs.snapshot(kdir, SNAPSHOT_FILES), driver)
        if tree.problems:
            ERRORS.labels("read").inc(len(tree.problems))
            problems.extend(tree.problems)
        owned: dict[str, Owned] = {}
        for path, entry in self.owned.items():
            local = _local(path, kdir)
            if local is not None:
                owned[local] = entry
        demands = {p.uid: PodDemand(p.uid, p.qos, p.memory_min) for p in pod_list if p.active and p.memory_min > 0}
        plan = plan_pass(tree, owned, demands, budget)

        failed: dict[str, str] = {}
        writes = plan.writes if enforceable and not self.settings.dry_run else []
        if writes:
            errors = self.fs.write([(_global(w.path, kdir) + "/" + MEMORY_MIN, w.text) for w in writes])
            for w in writes:
                error = errors.get(_global(w.path, kdir) + "/" + MEMORY_MIN)
                if error is not None:
                    failed[w.path] = error
                    problems.append(f"{_global(w.path, kdir)}/memory.min: write {w.text} failed: {error}")
                    log.warning("write failed", extra={"cgroup": _global(w.path, kdir), "value": w.text,
                                                       "error": error})
                else:
                    log.info("memory.min %s", "raised" if w.raise_ else "lowered",
                             extra={"cgroup": _global(w.path, kdir), "from": w.old, "to": w.value,
                                    "reason": w.reason})
            WRITES.labels("ok").inc(len(writes) - len(failed))
            if failed:
                WRITES.labels("error").inc(len(failed))
                ERRORS.labels("write").inc(len(failed))
        new_owned = plan.owned_after(set(failed)) if writes else {
            p: o for p, o in owned.items() if p in plan.previous_owned}
        self.owned = {_global(p, kdir): o for p, o in new_owned.items()}
        self.state.save(self.owned)
        if self.state.problem:
            ERRORS.labels("state").inc()
            problems.append(self.state.problem)

        values = dict(plan.final)
        unwritten = {w.path: w.old for w in plan.writes if w.path in failed or not writes}
        values.update(unwritten)
        for path in plan.uncertain:
            if tree.nodes[path].min is None:
                values.pop(path, None)
        figures = protection_figures(tree, values, plan.demand.get("", 0), bool(facts.mount.recursiveprot), pod_list)
        check = nri_check(tree, pod_list)
        problems.extend(check.details[:5])
        policy_source = "observed" if self.settings.kubelet_policy == "observed" else "flag"
        policy = infer_kubelet_policy(tree, new_owned) if policy_source == "observed" else self.settings.kubelet_policy
        overcommit_detail = None
        if plan.overcommit:
            overcommit_detail = (f"kubepods asks {format_bytes(plan.demand.get('', 0))} of memory.min but the node can "
                                 f"protect {format_bytes(budget)}: {format_bytes(plan.overcommit)} over-committed "
                                 "(covered only up to the budget)")
            problems.append(overcommit_detail)
        if plan.pending_pods:
            log.debug("pre-provisioned pods without a cgroup yet", extra={"pods": list(plan.pending_pods)})
        report = NodeReport(
            node=self.settings.node, observed_at=format_time(datetime.now(UTC)),
            cgroup_v2=facts.mount.cgroup2, memory_controller=controllers, recursive_prot=facts.mount.recursiveprot,
            kubelet_policy=policy, kubelet_policy_source=policy_source,
            protectable_bytes=budget, kubepods_min_bytes=figures.kubepods_min, demanded_bytes=figures.demanded,
            kernel_protected_bytes=figures.kernel_protected, kernel_protected_now_bytes=figures.kernel_protected_now,
            outside_kubepods_min_bytes=outside, accounted_bytes=figures.accounted, drift_bytes=figures.drift,
            overcommit_bytes=plan.overcommit, nri_honoured=check.honoured, nri_mismatches=check.mismatches,
            offered_classes=offer.value, offered_classes_source=offer.source, problems=tuple(problems),
        )
        return PassResult(report, list(writes), failed, figures=figures, overcommit_detail=overcommit_detail)


def _global(path: str, kdir: str) -> str:
    return f"{kdir}/{path}" if path else kdir


def _local(path: str, kdir: str) -> str | None:
    if path == kdir:
        return ""
    if path.startswith(kdir + "/"):
        return path[len(kdir) + 1:]
    return None


def _with(report: NodeReport, **changes: object) -> NodeReport:
    return replace(report, **changes)  # type: ignore[arg-type]

