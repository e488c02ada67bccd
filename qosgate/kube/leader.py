"""Lease-based leader election (coordination.k8s.io/v1), the same protocol as client-go's leaderelection.

Lease spec fields: holderIdentity, leaseDurationSeconds, acquireTime, renewTime (MicroTime,
`2006-01-02T15:04:05.000000Z`), leaseTransitions. Every write carries metadata.resourceVersion, so two
candidates racing for one lease cannot both win: the loser gets 409 Conflict.

Safety does not trust wall clocks across machines. A candidate judges another holder's lease expired only
when it has seen the *same* lease record, unchanged, for leaseDurationSeconds on its own monotonic clock.
The leader, in turn, considers itself leader only for renew_deadline (< lease_duration) after the start of
its last successful renewal. Any record the leader renews changes the resourceVersion, so a candidate that
saw an older record either restarts its wait or loses the update race.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from qosgate.kube.rest import ApiError, KubeError, request_json
from qosgate.kube.transport import KubeClient

log = logging.getLogger(__name__)

MICROTIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_microtime(moment: datetime) -> str:
    """metav1.MicroTime wire form, always UTC with six fractional digits."""
    return moment.astimezone(UTC).strftime(MICROTIME_FORMAT)


def lease_path(namespace: str, name: str = "") -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


class LeaderElector:
    """Campaign for the lease `namespace/name` as `identity` on a background thread.

    Callbacks run on the elector thread; on_stopped_leading runs *before* the lease is released, so work
    stops before a successor can start. After losing the lease the elector keeps campaigning.
    """

    def __init__(
        self,
        api_client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        *,
        release_on_stop: bool = True,
        annotations: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    ):
        if not identity:
            raise ValueError("identity must be non-empty (use the pod name)")
        if not 0 < retry_period < renew_deadline < lease_duration:
            # The safety argument above needs renew_deadline < lease_duration; retrying less often than the
            # deadline would make a single failed renewal fatal.
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration, got "
                             f"{retry_period} / {renew_deadline} / {lease_duration}")
        self.api_client = api_client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.release_on_stop = release_on_stop
        # Written on the Lease while this candidate holds it (e.g. where followers reach the leader, and what
        # `qosgate status` shows); a callable is asked afresh at every renewal.
        self.annotations = annotations

        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._leading = False
        self._renewed_at = -math.inf  # monotonic start of the last successful acquire/renew
        self._lease: dict[str, Any] | None = None  # last lease object we read or wrote
        self._observed_key: tuple[object, ...] | None = None
        self._observed_at = 0.0

        self.observed_holder = ""
        self.transitions = 0  # times this elector became leader
        self.last_error: str | None = None

    # --- public -----------------------------------------------------------------------------------
    def holder_annotation(self, key: str) -> str:
        """An annotation of the Lease as last read, while someone (us included) holds it; "" otherwise."""
        lease = self._lease
        if lease is None or not self.observed_holder:
            return ""
        annotations = (lease.get("metadata") or {}).get("annotations") or {}
        value = annotations.get(key, "") if isinstance(annotations, dict) else ""
        return value if isinstance(value, str) else ""

    @property
    def is_leader(self) -> bool:
        with self._state_lock:
            return self._leading and time.monotonic() - self._renewed_at < self.renew_deadline

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("elector already started")
        self._thread = threading.Thread(target=self._run, name=f"leader-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop campaigning; a leader steps down and (by default) clears the holder for a fast hand-over."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # --- loop -------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                attempt_started = time.monotonic()
                acquired = self._try_acquire_or_renew(attempt_started)
                if acquired:
                    self._became_or_stayed_leader(attempt_started)
                elif self._leading and (self.observed_holder not in ("", self.identity)
                                        or time.monotonic() - self._renewed_at >= self.renew_deadline):
                    # Someone else holds it, or we could not renew in time: stop before they start.
                    self._step_down("lost the lease")
                self._stop.wait(self.retry_period)
        finally:
            if self._leading:
                self._step_down("stopping")
                if self.release_on_stop:
                    self._release()

    def _became_or_stayed_leader(self, attempt_started: float) -> None:
        with self._state_lock:
            was_leading = self._leading
            self._leading = True
            self._renewed_at = attempt_started
        if not was_leading:
            self.transitions += 1
            log.info("leader election %s/%s: %s is now the leader", self.namespace, self.name, self.identity)
            self._call(self.on_started_leading)

    def _step_down(self, why: str) -> None:
        with self._state_lock:
            if not self._leading:
                return
            self._leading = False
        log.info("leader election %s/%s: %s stops leading (%s)", self.namespace, self.name, self.identity, why)
        self._call(self.on_stopped_leading)

    def _call(self, callback: Callable[[], None] | None) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:
            log.exception("leader election callback %r failed", callback)

    # --- the protocol -----------------------------------------------------------------------------
    def _spec(self, now: datetime, previous: dict[str, Any]) -> dict[str, Any]:
        stamp = format_microtime(now)
        spec = dict(previous)
        if previous.get("holderIdentity") != self.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(previous.get("leaseTransitions") or 0) + (1 if previous else 0)
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = max(1, math.ceil(self.lease_duration))
        spec["renewTime"] = stamp
        return spec

    def _metadata(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        ours = self.annotations() if callable(self.annotations) else self.annotations
        if not ours:
            return dict(metadata)
        annotations = metadata.get("annotations")
        merged = {**(annotations if isinstance(annotations, dict) else {}), **ours}
        return {**metadata, "annotations": merged}

    def _observe(self, lease: dict[str, Any], at: float) -> None:
        spec = lease.get("spec") or {}
        metadata = lease.get("metadata") or {}
        key = (metadata.get("resourceVersion"), spec.get("holderIdentity"), spec.get("renewTime"))
        if key != self._observed_key:
            self._observed_key = key
            self._observed_at = at
        self._lease = lease
        self.observed_holder = str(spec.get("holderIdentity") or "")

    def _try_acquire_or_renew(self, attempt_started: float) -> bool:
        now = datetime.now(UTC)
        path = lease_path(self.namespace, self.name)
        try:
            lease = request_json(self.api_client, "GET", path)
        except ApiError as exc:
            if not exc.not_found:
                self.last_error = str(exc)
                return False
            return self._create(now, attempt_started)
        except KubeError as exc:
            self.last_error = str(exc)
            return False
        self._observe(lease, attempt_started)
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        if holder and holder != self.identity:
            duration = spec.get("leaseDurationSeconds")
            duration = float(duration) if isinstance(duration, int | float) and duration > 0 else self.lease_duration
            if attempt_started - self._observed_at < duration:
                return False  # held, and not yet expired by our own clock
        updated = {**lease, "metadata": self._metadata(lease.get("metadata") or {}), "spec": self._spec(now, spec)}
        try:
            written = request_json(self.api_client, "PUT", path, body=updated)
        except ApiError as exc:
            self.last_error = str(exc)
            return False  # 409: someone else wrote first; we will see their record next round
        except KubeError as exc:
            self.last_error = str(exc)
            return False
        self._observe(written, attempt_started)
        return True

    def _create(self, now: datetime, attempt_started: float) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": self._metadata({"name": self.name, "namespace": self.namespace}),
                "spec": self._spec(now, {})}
        try:
            written = request_json(self.api_client, "POST", lease_path(self.namespace), body=body)
        except KubeError as exc:
            self.last_error = str(exc)  # 409 AlreadyExists: another candidate created it first
            return False
        self._observe(written, attempt_started)
        return True

    def _release(self) -> None:
        """Clear the holder so a successor takes over at once instead of waiting out the lease."""
        lease = self._lease
        if lease is None:
            return
        spec = dict(lease.get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            return
        stamp = format_microtime(datetime.now(UTC))
        spec.update(holderIdentity="", leaseDurationSeconds=1, acquireTime=stamp, renewTime=stamp)
        try:
            request_json(self.api_client, "PUT", lease_path(self.namespace, self.name), body={**lease, "spec": spec})
        except KubeError as exc:
            # Not fatal: the lease simply expires after leaseDurationSeconds.
            self.last_error = f"release failed: {exc}"
            log.warning("leader election %s/%s: %s", self.namespace, self.name, self.last_error)


class CatchUpBarrier:
    """After winning the Lease, serve only once a watch cache has seen everything up to that moment.

    The previous leader's last writes may still be in flight on our watch (the extender: its last binds):
    deciding before they arrive could double-book. A quorum read (LIST limit=1, no resourceVersion) of
    `list_path` gives the API's current resourceVersion; the barrier opens when `cache_version()` (the
    cache's resourceVersion, moved by events and bookmarks) has reached it.
    resourceVersions are compared as integers, which holds for etcd-backed servers.

    The wait is bounded (`max_wait`, default 3 s), because the cache's resourceVersion only moves with events
    and bookmarks: on a quiet cluster nothing moves it for up to a minute although nothing is missing, and
    scheduling would stall that long at every hand-over. The binds the barrier protects against were POSTed
    by the previous leader while it still held the Lease — at most one renew period before it stopped — and
    their watch events arrive within milliseconds on a healthy apiserver, so a few seconds cover them with a
    wide margin; a non-numeric resourceVersion or the bound opens it with a log line.
    """

    def __init__(self, api: KubeClient, cache_version: Callable[[], str], list_path: str = "/api/v1/pods",
                 max_wait: float = 3.0, poll: float = 0.05):
        self.api, self.cache_version, self.list_path = api, cache_version, list_path
        self.max_wait, self.poll = max_wait, poll
        self._generation = 0
        self._open = threading.Event()

    @property
    def open(self) -> bool:
        return self._open.is_set()

    def on_started_leading(self) -> None:
        self._generation += 1
        self._open.clear()
        threading.Thread(target=self._wait, args=(self._generation,), name="extender-catch-up", daemon=True).start()

    def on_stopped_leading(self) -> None:
        self._generation += 1
        self._open.clear()

    def _wait(self, generation: int) -> None:
        deadline = time.monotonic() + self.max_wait
        target: int | None = None
        while target is None and time.monotonic() < deadline and generation == self._generation:
            try:
                listed = request_json(self.api, "GET", self.list_path, query=[("limit", "1")])
                target = int(listed.get("metadata", {}).get("resourceVersion", ""))
            except ValueError:
                break  # not an integer: cannot compare, open below
            except KubeError as exc:
                log.warning("catch-up read failed, retrying: %s", exc)
                time.sleep(1.0)
        while target is not None and time.monotonic() < deadline and generation == self._generation:
            current = self.cache_version()
            if current.isdigit() and int(current) >= target:
                break
            time.sleep(self.poll)
        if generation != self._generation:
            return
        if target is None or time.monotonic() >= deadline:
            log.info("serving as leader after %.1fs without the watch passing the API's revision (a quiet "
                     "cluster sends no events)", self.max_wait)
        self._open.set()
