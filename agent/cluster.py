"""The agent's API side: pods bound to its node (a watch with fieldSelector spec.nodeName), its Node object
(configured budget and admin class offer), the report Lease and over-commit Events.

Every call here may fail (API down, RBAC, admission policy): failures are logged and counted
(`qosgate_agent_errors_total{kind="api"}`), never raised into the pass — the cgroup side keeps working
with the last known pods, and the extender treats an unrenewed report as stale.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from qosgate.agent.metrics import ERRORS
from qosgate.core.nodefit import protectable
from qosgate.core.nodereport import LEASE_NAMESPACE, NodeReport, lease_name, lease_object, materially_changed
from qosgate.core.podprotection import PodView, pod_view_from_raw
from qosgate.core.records import NodeRecord, node_record_from_raw
from qosgate.kube.leader import format_microtime, lease_path
from qosgate.kube.rest import ApiError, KubeError, request_json
from qosgate.kube.transport import KubeClient

log = logging.getLogger("qosgate.agent.cluster")


class PodViewStore:
    """An informer store (qosgate.kube.informer.InformerStore) of the node's pods as PodViews.

    `on_change` is called (on the informer thread) whenever a pod appears, leaves or changes what the agent
    decides on, so the pass loop can pre-provision a newly bound pod at once.
    """

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._pods: dict[str, PodView] = {}
        self._lock = threading.Lock()
        self._rv = ""
        self._synced = False
        self._on_change = on_change

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def replace(self, objs: Iterable[Mapping[str, Any]], resource_version: str) -> None:
        views = {}
        for obj in objs:
            view = pod_view_from_raw(obj)
            if view.uid:
                views[view.uid] = view
        with self._lock:
            self._pods = views
            self._rv = resource_version
            self._synced = True
        self._notify()

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        view = pod_view_from_raw(obj)
        if not view.uid:
            return
        with self._lock:
            old = self._pods.get(view.uid)
            if event_type == "DELETED":
                self._pods.pop(view.uid, None)
            else:
                self._pods[view.uid] = view
        if event_type == "DELETED" or old != view:
            self._notify()

    @property
    def resource_version(self) -> str:
        return self._rv

    @resource_version.setter
    def resource_version(self, value: str) -> None:
        self._rv = value

    @property
    def synced(self) -> bool:
        return self._synced

    def pods(self) -> list[PodView] | None:
        with self._lock:
            return list(self._pods.values()) if self._synced else None


class NodeInfo:
    """The agent's Node object, re-read at most every `refresh` seconds; the last good copy is kept."""

    def __init__(self, api: KubeClient, node: str, refresh: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, nri_configmap: str | None = None) -> None:
        self.api = api
        self.node = node
        self.nri_configmap = nri_configmap  # "namespace/name" of the NRI plugin's ConfigMap
        self.nri_text: str | None = None
        self.refresh = refresh
        self.clock = clock
        self.record: NodeRecord | None = None
        self._raw_offer: str | None = None
        self._fetched = -math.inf

    def update(self) -> None:
        if self.clock() - self._fetched < self.refresh:
            return
        self._fetched = self.clock()
        try:
            raw = request_json(self.api, "GET", f"/api/v1/nodes/{self.node}", timeout=(5.0, 10.0))
        except KubeError as exc:
            ERRORS.labels("api").inc()
            log.warning("cannot read node %s: %s", self.node, exc)
            return
        self.record = node_record_from_raw(raw)
        annotations = (raw.get("metadata") or {}).get("annotations") or {}
        offer = annotations.get("qosgate.io/qos-classes")
        self._raw_offer = offer if isinstance(offer, str) else None
        if self.nri_configmap:
            self.nri_text = read_configmap_key(self.api, self.nri_configmap, "config.yaml")

    def configured_budget(self, protectable_percent: int) -> int | None:
        if self.record is None or (self.record.allocatable_memory == 0 and self.record.protectable_override is None):
            return None
        return protectable(self.record, protectable_percent)

    def admin_offer(self) -> str | None:
        return self._raw_offer


def read_configmap_key(api: KubeClient, ref: str, key: str) -> str | None:
    """data[key] of the ConfigMap "namespace/name"; None (logged, counted) when it cannot be read."""
    namespace, _, name = ref.partition("/")
    try:
        configmap = request_json(api, "GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                                 timeout=(5.0, 10.0))
    except KubeError as exc:
        ERRORS.labels("api").inc()
        log.warning("cannot read configmap %s: %s", ref, exc)
        return None
    value = (configmap.get("data") or {}).get(key)
    return value if isinstance(value, str) else None


class ClusterState:
    """The ClusterView the pass reads: the pod store plus the node info."""

    def __init__(self, pods: PodViewStore, node: NodeInfo | None) -> None:
        self.store = pods
        self.node = node

    def pods(self) -> list[PodView] | None:
        return self.store.pods()

    def configured_budget(self, protectable_percent: int) -> int | None:
        if self.node is None:
            return None
        self.node.update()
        return self.node.configured_budget(protectable_percent)

    def admin_offer(self) -> str | None:
        return self.node.admin_offer() if self.node is not None else None

    def nri_config_text(self) -> str | None:
        return self.node.nri_text if self.node is not None else None


def list_pods_once(api: KubeClient, node: str) -> PodViewStore:
    """--once: one LIST instead of a watch. An API failure leaves the store unsynced (pods unknown)."""
    store = PodViewStore()
    try:
        listed = request_json(api, "GET", "/api/v1/pods", query=[("fieldSelector", f"spec.nodeName={node}")])
    except KubeError as exc:
        ERRORS.labels("api").inc()
        log.warning("cannot list the pods of node %s: %s", node, exc)
        return store
    items = listed.get("items")
    store.replace(items if isinstance(items, list) else [],
                  str((listed.get("metadata") or {}).get("resourceVersion") or ""))
    return store


class LeasePublisher:
    """Writes the node report Lease when it changed materially or the heartbeat is due (5,000 nodes
    writing every pass would flood the API). leaseDurationSeconds = 3 × the report interval: the staleness bound."""

    def __init__(self, api: KubeClient, node: str, report_interval: float = 30.0, namespace: str = LEASE_NAMESPACE,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.api = api
        self.node = node
        self.namespace = namespace
        self.report_interval = report_interval
        self.lease_duration = max(1, math.ceil(3 * report_interval))
        self.clock = clock
        self.wall = wall
        self.name = lease_name(node)
        self.published: NodeReport | None = None
        self.published_at: float | None = None  # monotonic
        self.published_wall: datetime | None = None
        self.writes = 0
        self.last_error: str | None = None
        self._rv: str | None = None

    def due(self, report: NodeReport) -> bool:
        if self.published_at is None or self.clock() - self.published_at >= self.report_interval:
            return True
        return materially_changed(self.published, report)

    def publish(self, report: NodeReport, force: bool = False) -> bool:
        """True when the Lease was written. Never raises."""
        if not force and not self.due(report):
            return False
        now = self.wall()
        try:
            self._write(report, now)
        except KubeError as exc:
            ERRORS.labels("api").inc()
            self.last_error = str(exc)
            log.warning("cannot publish node report %s/%s: %s", self.namespace, self.name, exc)
            return False
        self.last_error = None
        self.published, self.published_at, self.published_wall = report, self.clock(), now
        self.writes += 1
        return True

    def _write(self, report: NodeReport, now: datetime) -> None:
        path = lease_path(self.namespace, self.name)
        for attempt in range(2):
            if self._rv is None:
                try:
                    current = request_json(self.api, "GET", path)
                    self._rv = str((current.get("metadata") or {}).get("resourceVersion") or "")
                except ApiError as exc:
                    if not exc.not_found:
                        raise
                    body = lease_object(report, format_microtime(now), self.lease_duration)
                    try:
                        created = request_json(self.api, "POST", lease_path(self.namespace), body=body)
                    except ApiError as create_exc:
                        if create_exc.conflict and attempt == 0:
                            continue  # created meanwhile (a previous run of ours): read it and update
                        raise
                    self._rv = str((created.get("metadata") or {}).get("resourceVersion") or "")
                    return
            body = lease_object(report, format_microtime(now), self.lease_duration, self._rv or None)
            try:
                updated = request_json(self.api, "PUT", path, body=body)
            except ApiError as exc:
                self._rv = None
                if (exc.conflict or exc.not_found) and attempt == 0:
                    continue
                raise
            self._rv = str((updated.get("metadata") or {}).get("resourceVersion") or "")
            return


class EventRecorder:
    """Kubernetes Events on the Node for over-commit: when it appears, and again every `repeat` seconds
    while it lasts (an Event per pass would be noise)."""

    REASON = "QosgateProtectionOvercommitted"

    def __init__(self, api: KubeClient, node: str, namespace: str = "default", repeat: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.node = node
        self.namespace = namespace
        self.repeat = repeat
        self.clock = clock
        self._last: float | None = None
        self.sent = 0

    def overcommit(self, message: str | None) -> None:
        if message is None:
            self._last = None
            return
        if self._last is not None and self.clock() - self._last < self.repeat:
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{self.node}.qosgate-", "namespace": self.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": self.node},
            "reason": self.REASON, "message": message[:1024], "type": "Warning",
            "source": {"component": "qosgate-agent", "host": self.node},
            "reportingComponent": "qosgate.io/agent", "reportingInstance": self.node,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            request_json(self.api, "POST", f"/api/v1/namespaces/{self.namespace}/events", body=body)
        except KubeError as exc:
            ERRORS.labels("api").inc()
            log.warning("cannot record the over-commit event: %s", exc)
            return
        self._last = self.clock()
        self.sent += 1
