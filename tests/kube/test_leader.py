"""Lease leader election against the fake API server. Durations are small; nothing asserts on time taken."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator

import pytest

from qosgate.kube.leader import LeaderElector, lease_path
from qosgate.kube.rest import request_json
from qosgate.kube.transport import KubeClient
from tests.kube.kubeops import create_namespace, wait_until

MICROTIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
TIMING = {"lease_duration": 0.8, "renew_deadline": 0.5, "retry_period": 0.05}


class Overlap:
    """Samples every elector's is_leader continuously and records any moment with two leaders."""

    def __init__(self, electors: list[LeaderElector]):
        self.electors = electors
        self.both: list[list[str]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            leaders = [e.identity for e in self.electors if e.is_leader]
            if len(leaders) > 1:
                self.both.append(leaders)
            self.samples += 1
            time.sleep(0.0005)  # yield the GIL: the electors must run at their normal pace

    def __enter__(self) -> Overlap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def electors(client: KubeClient) -> Iterator[list[LeaderElector]]:
    create_namespace(client, "qosgate-system")
    made: list[LeaderElector] = []
    yield made
    for elector in made:
        elector.stop()


def make(client: KubeClient, made: list[LeaderElector], identity: str, events: list[str] | None = None,
         **options: object) -> LeaderElector:
    def started() -> None:
        if events is not None:
            events.append(f"{identity}+")

    def stopped() -> None:
        if events is not None:
            events.append(f"{identity}-")

    elector = LeaderElector(client, "qosgate-system", "qosgate-extender", identity,
                            on_started_leading=started, on_stopped_leading=stopped, **{**TIMING, **options})
    made.append(elector)
    return elector


def read_lease(client: KubeClient) -> dict:
    return request_json(client, "GET", lease_path("qosgate-system", "qosgate-extender"))


def test_first_candidate_creates_and_holds_the_lease(client: KubeClient, electors: list[LeaderElector]) -> None:
    events: list[str] = []
    a = make(client, electors, "a", events)
    a.start()
    assert wait_until(lambda: a.is_leader)
    spec = read_lease(client)["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 1
    assert MICROTIME.fullmatch(spec["acquireTime"]) and MICROTIME.fullmatch(spec["renewTime"])
    assert spec["leaseTransitions"] == 0
    first_renew = spec["renewTime"]
    assert wait_until(lambda: read_lease(client)["spec"]["renewTime"] != first_renew)  # it keeps renewing
    a.stop()
    assert not a.is_leader and events == ["a+", "a-"]
    assert read_lease(client)["spec"]["holderIdentity"] == ""  # released


def test_release_hands_over_and_callbacks_do_not_overlap(client: KubeClient, electors: list[LeaderElector]) -> None:
    events: list[str] = []
    # A long lease: without the release, b would wait 30 s; the test would hit wait_until's bound and fail.
    slow = {"lease_duration": 30.0, "renew_deadline": 20.0, "retry_period": 0.05}
    a = make(client, electors, "a", events, **slow)
    b = make(client, electors, "b", events, **slow)
    with Overlap([a, b]) as overlap:
        a.start()
        assert wait_until(lambda: a.is_leader)
        b.start()
        assert wait_until(lambda: b.observed_holder == "a")
        assert not b.is_leader
        a.stop()
        assert wait_until(lambda: b.is_leader, timeout=10)
    assert overlap.both == [] and overlap.samples > 0
    assert events == ["a+", "a-", "b+"]
    spec = read_lease(client)["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] >= 1


def test_takeover_when_the_leader_stops_renewing(client: KubeClient, electors: list[LeaderElector],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    a = make(client, electors, "a", events)
    b = make(client, electors, "b", events)
    with Overlap([a, b]) as overlap:
        a.start()
        assert wait_until(lambda: a.is_leader)
        b.start()
        assert wait_until(lambda: b.observed_holder == "a")
        # Partition a from the API server: its renewals fail from now on.
        monkeypatch.setattr(a, "_try_acquire_or_renew", lambda started: False)
        assert wait_until(lambda: b.is_leader)
        assert not a.is_leader
    assert overlap.both == []
    assert events.index("a-") < events.index("b+")
    assert read_lease(client)["spec"]["holderIdentity"] == "b"


def test_crashed_leader_without_release_is_replaced_after_expiry(client: KubeClient,
                                                                 electors: list[LeaderElector]) -> None:
    a = make(client, electors, "a", release_on_stop=False)
    b = make(client, electors, "b")
    a.start()
    assert wait_until(lambda: a.is_leader)
    b.start()
    a.stop()  # no release: the lease still names a until it expires
    assert read_lease(client)["spec"]["holderIdentity"] == "a"
    assert wait_until(lambda: b.is_leader)


def test_candidates_never_lead_together(client: KubeClient, electors: list[LeaderElector]) -> None:
    rng = random.Random(11)
    group = [make(client, electors, f"c{i}") for i in range(3)]
    leaders_seen: set[str] = set()
    with Overlap(group) as overlap:
        for e in group:
            e.start()
        # Churn: repeatedly stall whoever leads (failed renewals) until someone else has taken over.
        for _ in range(4):
            assert wait_until(lambda: any(e.is_leader for e in group))
            leader = next(e for e in group if e.is_leader)
            leaders_seen.add(leader.identity)
            original = leader._try_acquire_or_renew
            leader._try_acquire_or_renew = lambda started: False  # type: ignore[method-assign]
            assert wait_until(lambda stalled=leader: any(e.is_leader for e in group if e is not stalled))
            leader._try_acquire_or_renew = original  # type: ignore[method-assign]
            if rng.random() < 0.5:
                threading.Event().wait(rng.uniform(0, 0.2))
    assert overlap.both == [], overlap.both
    assert len(leaders_seen) >= 2
