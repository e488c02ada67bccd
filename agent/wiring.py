"""Assemble the node agent for `qosgate agent`: cgroupfs, state file, pod watch, report Lease, events, loop.

`build_agent(config, lifecycle, api)` starts the pass loop on a background thread and returns the agent's
HTTP routes (none of its own: /healthz, /readyz and /metrics come from qosgate.serving.health on the plain
health port). `api` None is --local: the cgroup pass only, nothing published.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from qosgate.agent.cgroupfs import CgroupFS, HostCgroupFS
from qosgate.agent.cluster import ClusterState, EventRecorder, LeasePublisher, NodeInfo, PodViewStore
from qosgate.agent.engine import Agent, PassResult, PassSettings
from qosgate.agent.hostfacts import HostFiles
from qosgate.agent.state import StateFile
from qosgate.core.annotations import SYSTEM_NAMESPACE
from qosgate.kube.catalog import CatalogSource, open_catalog
from qosgate.serving.http import Route
from qosgate.serving.lifecycle import Lifecycle
from qosgate.serving.metrics import STATE, Sample, cache_samples

if TYPE_CHECKING:
    from qosgate.kube.transport import KubeClient

log = logging.getLogger("qosgate.agent")

# While a bound pod's cgroup does not exist yet, pass this often so its slice is covered as soon as the
# kubelet creates it (before its containers start).
FAST_INTERVAL = 0.5


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the agent is configured with; built once by the CLI."""

    settings: PassSettings
    # Resolved by `build_agent` / `--once` into settings.catalog: a file, else the ConfigMap followed live.
    catalog: CatalogSource = field(default_factory=CatalogSource)
    cgroup_root: str = "/sys/fs/cgroup"
    proc_root: str = "/proc"
    nri_config: str | None = "/etc/nri/memory-qos/config.yaml"
    state_file: str | None = "/var/lib/qosgate-agent/state.json"
    interval: float = 10.0
    report_interval: float = 30.0
    lease_namespace: str = SYSTEM_NAMESPACE
    event_namespace: str = "default"
    node_refresh: float = 60.0
    nri_configmap: str | None = "kube-system/nri-memory-qos-config.default"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def node(self) -> str:
        return str(self.settings.node)


def make_agent(config: AgentConfig, cluster: ClusterState | None = None, fs: CgroupFS | None = None) -> Agent:
    host = HostFiles(config.cgroup_root, config.proc_root, config.nri_config)
    state = StateFile(config.state_file, host.boot_id())
    return Agent(fs or HostCgroupFS(config.cgroup_root), host, config.settings, state, cluster)


def node_samples(runner: AgentRunner) -> Iterable[Sample]:
    result = runner.agent.last
    node = {"node": runner.agent.settings.node}
    if result is not None:
        r = result.report
        yield ("qosgate_node_protectable_bytes", "memory.min the node can protect (agent's budget).", node,
               float(r.protectable_bytes))
        yield ("qosgate_node_accounted_bytes", "Summed qosgate.io/memory-min of the active pods bound to the node.",
               node, float(r.accounted_bytes))
        yield ("qosgate_node_kernel_protected_bytes",
               "Effective memory.min the kernel grants kubepods' leaves (each using its memory.min).", node,
               float(r.kernel_protected_bytes))
        yield ("qosgate_node_protection_drift_bytes", "Accounted bytes of started pods the kernel does not protect.",
               node, float(r.drift_bytes))
        yield ("qosgate_node_overcommit_bytes", "memory.min asked under kubepods beyond the protectable budget.",
               node, float(r.overcommit_bytes))
        yield ("qosgate_agent_nri_mismatches",
               "Running containers whose memory.min differs from their NRI memory.min annotation.", node,
               float(r.nri_mismatches))
    if runner.publisher is not None and runner.publisher.published_wall is not None:
        yield ("qosgate_agent_report_published_timestamp_seconds", "When the node report Lease was last written.",
               node, runner.publisher.published_wall.timestamp())


class AgentRunner:
    """The pass loop: every `interval` seconds, sooner when a pod bound to the node changes."""

    def __init__(self, agent: Agent, interval: float, publisher: LeasePublisher | None = None,
                 events: EventRecorder | None = None, store: PodViewStore | None = None) -> None:
        self.agent = agent
        self.interval = interval
        self.publisher = publisher
        self.events = events
        self.store = store
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.completed_at: float | None = None

    def step(self) -> PassResult:
        result = self.agent.run_pass()
        self.completed_at = time.monotonic()
        if self.publisher is not None:
            self.publisher.publish(result.report)
        if self.events is not None:
            self.events.overcommit(result.overcommit_detail)
        return result

    def _run(self) -> None:
        while not self._stop.is_set():
            self.wake.clear()
            try:
                result = self.step()
            except Exception:  # never let the loop die: health and metrics must keep telling the truth
                log.exception("agent loop step failed")
                result = None
            pending = bool(result is not None and result.figures is not None and self._pending())
            self.wake.wait(FAST_INTERVAL if pending else self.interval)

    def _pending(self) -> bool:
        pods = self.agent.cluster.pods() if self.agent.cluster is not None else None
        last = self.agent.last
        if not pods or last is None or last.figures is None:
            return False
        started = set(last.figures.pod_protection)
        return any(p.active and p.memory_min > 0 and p.uid not in started for p in pods)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="qosgate-agent-passes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def ready(self) -> bool:
        """A pass completed recently (the loop is alive and not stuck on the filesystem)."""
        return self.completed_at is not None and time.monotonic() - self.completed_at < 3 * self.interval + 5


def with_catalog(config: AgentConfig, api: KubeClient | None,
                 on_stop: Callable[[Callable[[], object]], None]) -> AgentConfig:
    """`config` deciding with its catalog source: the file, or (with a cluster) the ConfigMap as it changes —
    protectablePercent and the classes offered follow an edit at the next pass, without a restart."""
    return replace(config, settings=replace(config.settings, catalog=open_catalog(config.catalog, api, on_stop)))


def build_agent(config: AgentConfig, lifecycle: Lifecycle, api: KubeClient | None) -> list[Route]:
    """Start the agent; register readiness, metrics and stoppers on `lifecycle`."""
    config = with_catalog(config, api, lifecycle.on_stop)
    if api is None:
        runner = AgentRunner(make_agent(config), config.interval)
    else:
        from qosgate.kube.informer import Informer

        holder: list[AgentRunner] = []

        def wake() -> None:
            if holder:
                holder[0].wake.set()

        store = PodViewStore(on_change=wake)
        node = NodeInfo(api, config.node, config.node_refresh, nri_configmap=config.nri_configmap)
        informer = Informer(api, "/api/v1/pods", store, field_selector=f"spec.nodeName={config.node}",
                            name="node-pods")
        agent = make_agent(config, ClusterState(store, node))
        runner = AgentRunner(agent, config.interval,
                             LeasePublisher(api, config.node, config.report_interval, config.lease_namespace),
                             EventRecorder(api, config.node, config.event_namespace), store)
        holder.append(runner)
        informer.start()
        lifecycle.on_stop(informer.stop)
        lifecycle.readiness.checks["node pods listed"] = lambda: informer.has_synced
        STATE.register("agent-cache", cache_samples("agent", lambda: {informer.name: informer.stats()}))
    # A catalog edit (budget percent, classes) is applied by the next pass: run it now, not an interval later.
    config.settings.catalog.subscribe(lambda _catalog: runner.wake.set())
    STATE.register("agent", lambda: node_samples(runner))
    lifecycle.readiness.checks["agent pass completed recently"] = runner.ready
    runner.start()
    lifecycle.on_stop(runner.stop)
    return []
