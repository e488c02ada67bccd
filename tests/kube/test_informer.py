"""Informers and the ClusterCache against the fake API server over real HTTP."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from qosgate.core.records import PodRecord, pod_record_from_raw
from qosgate.kube.informer import ClusterCache, Informer
from qosgate.kube.rest import request_json
from qosgate.kube.store import NodeStore, PodStore
from qosgate.kube.transport import KubeClient
from tests.fakeapi import FakeAPIServer
from tests.kube.kubeops import (
    bind,
    create,
    create_namespace,
    delete_pod,
    list_all,
    set_phase,
    update_pod_annotations,
    wait_until,
)
from tests.kube.podfactory import make_node, make_pod
from tests.kube.test_store import recompute

FAST = {"backoff_initial": 0.02, "backoff_max": 0.2}


class Mirror:
    """A listener that rebuilds the store from (old, new) notifications and checks they tell one story."""

    def __init__(self) -> None:
        self.records: dict[str, PodRecord] = {}
        self.problems: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, old: PodRecord | None, new: PodRecord | None) -> None:
        with self.lock:
            uid = (old or new).uid  # type: ignore[union-attr]
            if self.records.get(uid) != old:
                self.problems.append(f"{uid}: told old={old}, but last heard {self.records.get(uid)}")
            if old == new:
                self.problems.append(f"{uid}: notified without a change")
            if new is None:
                self.records.pop(uid, None)
            else:
                self.records[uid] = new


def fresh_records(client: KubeClient) -> dict[str, PodRecord]:
    items, _ = list_all(client, "/api/v1/pods")
    return {r.uid: r for r in (pod_record_from_raw(item) for item in items)}


def store_records(store: PodStore) -> dict[str, PodRecord]:
    return {r.uid: r for r in store.records()}


def assert_aggregates_consistent(store: PodStore) -> None:
    records = store.records()
    memory, classes, usage = recompute(records)
    for node in {r.node_name for r in records if r.node_name}:
        assert store.node_memory_min(node) == memory.get(node, 0)
        assert store.node_class_count(node) == dict(classes.get(node, {}))
    for ns in {r.namespace for r in records}:
        assert store.namespace_usage(ns) == usage.get(ns, {})


@pytest.fixture
def cache(client: KubeClient) -> Iterator[ClusterCache]:
    cache = ClusterCache(client, "annotated", watch_nodes=True, watch_quota_configmaps=True, page_size=7, **FAST)
    yield cache
    cache.stop()


def random_operations(client: KubeClient, rng: random.Random, count: int, live: dict[tuple[str, str], bool],
                      serial: list[int]) -> None:
    """Create / update / bind / finish / delete pods at random. `live` maps (ns, name) → bound."""
    for _ in range(count):
        choice = rng.random()
        if choice < 0.35 or not live:
            serial[0] += 1
            ns = rng.choice(["alpha", "beta"])
            name = f"pod-{serial[0]}"
            node = rng.choice(["", "", "n1", "n2"])
            create(client, make_pod(name, ns, node=node, memory_min=rng.choice([0, 2**20, 2**30]),
                                    pod_class=rng.choice([None, "gold", "silver"]),
                                    container_class=rng.choice([None, "bronze"])))
            live[(ns, name)] = bool(node)
            continue
        ns, name = rng.choice(sorted(live))
        if choice < 0.55:
            update_pod_annotations(client, ns, name, {"qosgate.io/memory-min": str(rng.randint(0, 2**31))})
        elif choice < 0.7 and not live[(ns, name)]:
            bind(client, ns, name, rng.choice(["n1", "n2"]))
            live[(ns, name)] = True
        elif choice < 0.8:
            set_phase(client, ns, name, rng.choice(["Running", "Succeeded", "Failed"]))
        else:
            delete_pod(client, ns, name)
            del live[(ns, name)]


def test_cache_converges_after_random_operations(client: KubeClient, cache: ClusterCache) -> None:
    for ns in ("alpha", "beta"):
        create_namespace(client, ns)
    rng = random.Random(2024)
    live: dict[tuple[str, str], bool] = {}
    serial = [0]
    random_operations(client, rng, 40, live, serial)  # some before the initial LIST (paginated: 7 a page)
    mirror = Mirror()
    cache.pods.subscribe(mirror)
    cache.start()
    assert cache.wait_for_sync(20)
    assert cache.ready
    random_operations(client, rng, 150, live, serial)  # the rest while the watch runs

    expected = fresh_records(client)
    assert wait_until(lambda: store_records(cache.pods) == expected), cache.stats()
    assert mirror.problems == []
    # The mirror only heard changes after subscribing, i.e. from the first LIST on: it must match too.
    assert mirror.records == expected
    assert_aggregates_consistent(cache.pods)
    # An event is counted just after the store applied it: wait for the counter, not only the store.
    assert wait_until(lambda: cache.pod_informer.events > 0) and cache.pod_informer.relists == 0
    assert cache.pod_informer.last_error is None


def test_survives_dropped_watches_without_relisting(client: KubeClient, api: FakeAPIServer,
                                                    cache: ClusterCache) -> None:
    for ns in ("alpha", "beta"):
        create_namespace(client, ns)
    cache.start()
    assert cache.wait_for_sync(20)
    rng = random.Random(7)
    live: dict[tuple[str, str], bool] = {}
    serial = [0]
    for _ in range(3):
        random_operations(client, rng, 20, live, serial)
        api.drop_watches()
    random_operations(client, rng, 20, live, serial)
    expected = fresh_records(client)
    assert wait_until(lambda: store_records(cache.pods) == expected), cache.stats()
    assert cache.pod_informer.reconnects >= 1
    assert cache.pod_informer.relists == 0
    assert_aggregates_consistent(cache.pods)


def test_compaction_forces_a_relist_that_loses_and_duplicates_nothing(client: KubeClient, api: FakeAPIServer,
                                                                       cache: ClusterCache) -> None:
    create_namespace(client, "alpha")
    for i in range(10):
        create(client, make_pod(f"keep-{i}", "alpha", node="n1", memory_min=2**20))
    mirror = Mirror()
    cache.pods.subscribe(mirror)
    # Hold the informer thread inside a listener while the world moves on and history is compacted, so the
    # watch it resumes from is guaranteed to be older than the compaction point.
    paused = threading.Event()
    release = threading.Event()

    def pause_on_trigger(old: PodRecord | None, new: PodRecord | None) -> None:
        if new is not None and new.name == "trigger" and old is None:
            paused.set()
            release.wait(20)

    cache.pods.subscribe(pause_on_trigger)
    cache.start()
    assert cache.wait_for_sync(20)
    create(client, make_pod("trigger", "alpha"))
    assert paused.wait(20)
    api.drop_watches()
    delete_pod(client, "alpha", "keep-0")
    update_pod_annotations(client, "alpha", "keep-1", {"qosgate.io/memory-min": "5"})
    set_phase(client, "alpha", "keep-2", "Succeeded")
    create(client, make_pod("late", "alpha", node="n2"))
    api.compact()
    release.set()

    expected = fresh_records(client)
    assert wait_until(lambda: store_records(cache.pods) == expected), cache.stats()
    # The store can match before the relist's counters move: `_list` counts a list after replace() returns.
    assert wait_until(lambda: cache.pod_informer.relists >= 1), cache.stats()
    assert mirror.problems == []
    assert mirror.records == expected
    assert len(cache.pods) == len(expected) == 11
    assert cache.pods.get_by_name("alpha", "keep-0") is None
    assert cache.pods.get_by_name("alpha", "keep-1").memory_min == 5  # type: ignore[union-attr]
    assert_aggregates_consistent(cache.pods)
    assert cache.pods.node_memory_min("n1") == 7 * 2**20 + 5


def test_bookmarks_advance_the_resource_version(client: KubeClient, api: FakeAPIServer) -> None:
    create_namespace(client, "alpha")
    store = PodStore()
    informer = Informer(client, "/api/v1/pods", store, name="pods", **FAST)
    informer.start()
    try:
        assert informer.wait_for_sync(20)
        start_rv = int(informer.resource_version)
        # Writes to another resource move the global revision without any pod event.
        for i in range(5):
            create(client, {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": f"cm-{i}", "namespace": "alpha"}, "data": {}})
        _, latest = list_all(client, "/api/v1/configmaps")
        api.send_bookmarks()
        assert wait_until(lambda: informer.bookmarks > 0 and int(store.resource_version) >= int(latest),
                          timeout=30), informer.stats()
        assert int(informer.resource_version) > start_rv
        assert informer.events == 0 and len(store) == 0
        # That is what bookmarks are for: history compacted up to now does not force a relist.
        api.compact()
        api.drop_watches()
        create(client, make_pod("after", "alpha"))
        assert wait_until(lambda: store.get_by_name("alpha", "after") is not None), informer.stats()
        assert informer.relists == 0
    finally:
        informer.stop()
    assert not informer.running


def test_quota_configmaps_follow_the_label_selector(client: KubeClient, cache: ClusterCache) -> None:
    create_namespace(client, "alpha")
    labelled = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "quota", "namespace": "alpha", "labels": {"qosgate.io/quota": "true"}},
                "data": {"pod": "[]"}}
    create(client, labelled)
    create(client, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "alpha"},
                    "data": {}})
    cache.start()
    assert cache.wait_for_sync(20)
    assert [cm["metadata"]["name"] for cm in cache.quota_configmaps.in_namespace("alpha")] == ["quota"]
    # Removing the label makes the object leave the selector: the watch reports it as deleted.
    current = request_json(client, "GET", "/api/v1/namespaces/alpha/configmaps/quota")
    current["metadata"]["labels"] = {}
    request_json(client, "PUT", "/api/v1/namespaces/alpha/configmaps/quota", body=current)
    assert wait_until(lambda: cache.quota_configmaps.get("alpha", "quota") is None)


def test_nodes_are_cached(client: KubeClient) -> None:
    request_json(client, "POST", "/api/v1/nodes",
                 body=make_node("n1", "16Gi", {"qosgate.io/qos-classes": "memory-qos=gold:2"}))
    store = NodeStore()
    informer = Informer(client, "/api/v1/nodes", store, name="nodes", **FAST)
    informer.start()
    try:
        assert informer.wait_for_sync(20)
        assert store.get("n1").offered_classes == {"memory-qos": {"gold": 2}}  # type: ignore[union-attr]
        request_json(client, "POST", "/api/v1/nodes", body=make_node("n2"))
        assert wait_until(lambda: store.get("n2") is not None)
        request_json(client, "DELETE", "/api/v1/nodes/n1")
        assert wait_until(lambda: store.names() == ["n2"])
    finally:
        informer.stop()


def test_unreachable_server_reports_and_stop_is_prompt(client: KubeClient, api: FakeAPIServer) -> None:
    api.stop()
    informer = Informer(client, "/api/v1/pods", PodStore(), name="pods", **FAST)
    informer.start()
    assert wait_until(lambda: informer.last_error is not None and informer.reconnects >= 2)
    assert not informer.has_synced and not informer.wait_for_sync(0)
    informer.stop()
    assert not informer.running


def test_start_twice_is_an_error(client: KubeClient) -> None:
    informer = Informer(client, "/api/v1/pods", name="pods", **FAST)
    informer.start()
    try:
        with pytest.raises(RuntimeError):
            informer.start()
    finally:
        informer.stop()
    assert isinstance(informer.store, PodStore)


class GatedPodStore(PodStore):
    """Blocks the informer inside its first LIST (at the first pod converted) until the test lets go."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = threading.Event()
        self.release = threading.Event()

    def _convert(self, obj: Mapping[str, Any]) -> PodRecord:
        if not self.reached.is_set():
            self.reached.set()
            self.release.wait(20)
        return super()._convert(obj)


def test_expired_continue_token_falls_back_to_a_whole_list(client: KubeClient, api: FakeAPIServer) -> None:
    create_namespace(client, "alpha")
    for i in range(20):
        create(client, make_pod(f"p-{i}", "alpha"))
    store = GatedPodStore()
    informer = Informer(client, "/api/v1/pods", store, page_size=5, name="pods", **FAST)
    informer.start()
    try:
        assert store.reached.wait(20)
        # A write, then compaction up to it: the list's revision is now history, so the next page answers 410.
        create(client, make_pod("late", "alpha"))
        api.compact()
        store.release.set()
        assert informer.wait_for_sync(20)
        assert len(store) == 21 and store.get_by_name("alpha", "late") is not None, informer.stats()
        assert informer.last_error is not None and "410" in informer.last_error
        assert informer.lists == 1  # the half-done paginated list never reached the store
    finally:
        informer.stop()
