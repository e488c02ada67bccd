"""Watch semantics: official ``watch.Watch().stream`` and raw chunked line reading.

No test waits on wall-clock: every stream is bounded by ``timeoutSeconds`` only as a hang guard,
and bookmarks are forced with ``send_bookmarks()`` instead of waiting for the interval.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from .objects import configmap, pod
from .server import FakeAPIServer


def raw_events(resp: Any) -> Iterator[dict[str, Any]]:
    """Line-by-line reading of a ``_preload_content=False`` urllib3 response, like hand-written informers."""
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


class Collector:
    """Runs a watch in a thread and hands events over a queue (so the test can write meanwhile)."""

    def __init__(self, events: Iterator[dict[str, Any]]) -> None:
        self.q: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                for ev in events:
                    self.q.put(ev)
            except BaseException as exc:  # surfaced through next()
                self.error = exc
            finally:
                self.q.put(StopIteration)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def next(self) -> dict[str, Any]:
        item = self.q.get(timeout=30)  # hang guard only
        if item is StopIteration:
            raise AssertionError(f"stream ended: {self.error!r}")
        return item

    def rest(self) -> list[Any]:
        out = []
        while True:
            item = self.q.get(timeout=30)
            if item is StopIteration:
                return out
            out.append(item)


def summary(ev: dict[str, Any]) -> tuple[str, str]:
    obj = ev["raw_object"] if "raw_object" in ev else ev["object"]
    return ev["type"], obj["metadata"].get("name", "")


def until_bookmark(resp: Any, api: FakeAPIServer) -> list[tuple[str, str]]:
    """Everything queued for a watch, read up to a forced bookmark (a sentinel instead of waiting for a timeout).

    The watch must have been opened with allowWatchBookmarks; a bookmark is emitted only after every event
    already queued for the watcher, so what precedes it is exactly the backlog.
    """
    api.send_bookmarks()
    out = []
    for ev in raw_events(resp):
        if ev["type"] == "BOOKMARK":
            break
        out.append(summary(ev))
    resp.close()
    return out


def test_official_watch_stream_sees_added_modified_deleted(core: client.CoreV1Api) -> None:
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    w = watch.Watch()
    col = Collector(w.stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=60))
    core.create_namespaced_config_map("default", configmap("a", data={"v": "1"}))
    core.patch_namespaced_config_map("a", "default", {"data": {"v": "2"}})
    core.delete_namespaced_config_map("a", "default")
    events = [col.next() for _ in range(3)]
    assert [summary(e) for e in events] == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert events[1]["object"].data == {"v": "2"}  # deserialised into the model
    rvs = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert events[0]["raw_object"]["kind"] == "ConfigMap" and events[0]["raw_object"]["apiVersion"] == "v1"
    w.stop()


def test_watch_replays_history_after_the_given_resource_version(
    core: client.CoreV1Api, fake_api: FakeAPIServer
) -> None:
    start = core.create_namespaced_config_map("default", configmap("x")).metadata.resource_version
    core.create_namespaced_config_map("default", configmap("y"))
    core.delete_namespaced_config_map("x", "default")
    core.create_namespaced_pod("default", pod("other-kind"))  # never shows up in a configmap watch
    resp = core.list_namespaced_config_map(
        "default", watch=True, resource_version=start, allow_watch_bookmarks=True, _preload_content=False
    )
    assert until_bookmark(resp, fake_api) == [("ADDED", "y"), ("DELETED", "x")]


def test_watch_from_zero_or_unset_starts_with_synthetic_added(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    core.create_namespaced_config_map("default", configmap("one"))
    core.create_namespaced_config_map("default", configmap("two"))
    for rv in ("0", None):
        kwargs: dict[str, Any] = {"watch": True, "allow_watch_bookmarks": True, "_preload_content": False}
        if rv is not None:
            kwargs["resource_version"] = rv
        resp = core.list_namespaced_config_map("default", **kwargs)
        assert sorted(until_bookmark(resp, fake_api)) == [("ADDED", "one"), ("ADDED", "two")]


def test_bookmarks_carry_only_the_current_resource_version(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    # The call returns once the response headers arrived, i.e. once the watch is registered.
    resp = core.list_namespaced_config_map(
        "default",
        watch=True,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=60,
        _preload_content=False,
    )
    core.create_namespaced_pod("default", pod("moves-the-revision"))  # another resource: no configmap event
    fake_api.send_bookmarks()
    ev = next(raw_events(resp))
    assert ev == {
        "type": "BOOKMARK",
        "object": {
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(fake_api.resource_version)},
        },
    }
    resp.close()


def test_official_watch_consumes_bookmarks(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    w = watch.Watch()
    col = Collector(
        w.stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=60,
        )
    )
    core.create_namespaced_pod("default", pod("p"))
    fake_api.send_bookmarks()
    ev = col.next()
    assert ev["type"] == "BOOKMARK"
    assert w.resource_version == str(fake_api.resource_version)
    w.stop()


def test_periodic_bookmarks_without_forcing() -> None:
    params = {"watch": "1", "resourceVersion": "", "allowWatchBookmarks": "true", "timeoutSeconds": "30"}
    with (
        FakeAPIServer(bookmark_interval=0.05) as api,
        httpx.Client(base_url=api.url, headers={"Authorization": "Bearer admin"}, trust_env=False) as c,
    ):
        params["resourceVersion"] = str(api.resource_version)
        with c.stream("GET", "/api/v1/pods", params=params) as r:
            line = next(r.iter_lines())
    assert json.loads(line)["type"] == "BOOKMARK"


def test_compaction_makes_old_resource_versions_gone(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    old = core.create_namespaced_config_map("default", configmap("a")).metadata.resource_version
    core.create_namespaced_config_map("default", configmap("b"))
    fake_api.compact()
    resp = core.list_namespaced_config_map("default", watch=True, resource_version=old, _preload_content=False)
    events = list(raw_events(resp))
    assert events == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {old} ({fake_api.resource_version})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=old):
            pass
    assert err.value.status == 410
    # The current revision itself is still watchable.
    current = core.list_namespaced_config_map("default").metadata.resource_version
    resp = core.list_namespaced_config_map(
        "default", watch=True, resource_version=current, allow_watch_bookmarks=True, _preload_content=False
    )
    assert until_bookmark(resp, fake_api) == []


def test_history_bound_compacts_automatically() -> None:
    with FakeAPIServer(history_size=10) as api:
        first = api.seed([configmap(f"c{i}") for i in range(20)])
        core = client.CoreV1Api(api.api_client())
        resp = core.list_namespaced_config_map(
            "default", watch=True, resource_version=str(first - 15), _preload_content=False
        )
        assert next(raw_events(resp))["object"]["code"] == 410
        resp = core.list_namespaced_config_map(
            "default", watch=True, resource_version=str(first - 5), allow_watch_bookmarks=True, _preload_content=False
        )
        assert until_bookmark(resp, api) == [("ADDED", f"c{i}") for i in range(15, 20)]


def test_label_selector_transitions_are_added_and_deleted(core: client.CoreV1Api) -> None:
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    resp = core.list_namespaced_config_map(
        "default",
        watch=True,
        resource_version=rv,
        label_selector="quota=true",
        timeout_seconds=60,
        _preload_content=False,
    )
    core.create_namespaced_config_map("default", configmap("q", labels={"quota": "false"}))
    core.patch_namespaced_config_map("q", "default", {"metadata": {"labels": {"quota": "true"}}})
    core.patch_namespaced_config_map("q", "default", {"data": {"k": "v"}})
    core.patch_namespaced_config_map("q", "default", {"metadata": {"labels": {"quota": None}}})
    core.delete_namespaced_config_map("q", "default")
    core.create_namespaced_config_map("default", configmap("end", labels={"quota": "true"}))
    events = raw_events(resp)
    got = [summary(next(events)) for _ in range(4)]
    assert got == [("ADDED", "q"), ("MODIFIED", "q"), ("DELETED", "q"), ("ADDED", "end")]
    resp.close()


def test_field_selector_on_node_name(core: client.CoreV1Api) -> None:
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    resp = core.list_pod_for_all_namespaces(
        watch=True, resource_version=rv, field_selector="spec.nodeName=n1", timeout_seconds=60, _preload_content=False
    )
    core.create_namespaced_pod("default", pod("pending"))
    core.create_namespaced_pod("default", pod("elsewhere", node="n2"))
    core.create_namespaced_pod("default", pod("here", node="n1"))
    assert summary(next(raw_events(resp))) == ("ADDED", "here")
    resp.close()


def test_timeout_seconds_ends_the_stream_cleanly(core: client.CoreV1Api) -> None:
    events = list(
        watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version="0", timeout_seconds=1)
    )
    assert events == []


def test_drop_watches_cuts_streams_abruptly(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    resp = core.list_namespaced_config_map("default", watch=True, resource_version=rv, _preload_content=False)
    col = Collector(raw_events(resp))
    core.create_namespaced_config_map("default", configmap("before"))
    assert summary(col.next()) == ("ADDED", "before")
    assert fake_api.open_watches("configmaps") == 1
    assert fake_api.drop_watches() == 1
    assert col.rest() == []
    assert col.error is not None  # the chunked body was cut, not terminated
    assert fake_api.open_watches() == 0
    # A fresh watch from the last seen revision resumes without loss.
    core.create_namespaced_config_map("default", configmap("after"))
    resp = core.list_namespaced_config_map(
        "default", watch=True, resource_version=rv, allow_watch_bookmarks=True, _preload_content=False
    )
    assert until_bookmark(resp, fake_api) == [("ADDED", "before"), ("ADDED", "after")]


def test_send_initial_events_ends_with_an_annotated_bookmark(raw: httpx.Client) -> None:
    raw.post("/api/v1/namespaces/default/configmaps", json=configmap("x")).raise_for_status()
    params = {
        "watch": "true",
        "sendInitialEvents": "true",
        "allowWatchBookmarks": "true",
        "resourceVersionMatch": "NotOlderThan",
    }
    with raw.stream("GET", "/api/v1/namespaces/default/configmaps", params=params) as r:
        lines = r.iter_lines()
        first, second = json.loads(next(lines)), json.loads(next(lines))
    assert summary(first) == ("ADDED", "x")
    assert second["type"] == "BOOKMARK"
    assert second["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watch_wire_format_is_chunked_json_lines(raw: httpx.Client, fake_api: FakeAPIServer) -> None:
    rv = fake_api.resource_version
    raw.post("/api/v1/namespaces/default/configmaps", json=configmap("w")).raise_for_status()
    with raw.stream(
        "GET", "/api/v1/namespaces/default/configmaps", params={"watch": "1", "resourceVersion": str(rv)}
    ) as r:
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.headers["content-type"] == "application/json"
        first = next(r.iter_raw())
    assert first.endswith(b"\n") and json.loads(first)["type"] == "ADDED"


def test_many_concurrent_watches(core: client.CoreV1Api, fake_api: FakeAPIServer) -> None:
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    streams = [
        core.list_namespaced_config_map(
            "default", watch=True, resource_version=rv, timeout_seconds=60, _preload_content=False
        )
        for _ in range(40)
    ]
    assert fake_api.open_watches() == 40
    core.create_namespaced_config_map("default", configmap("fanout"))
    assert all(summary(next(raw_events(s))) == ("ADDED", "fanout") for s in streams)
    for s in streams:
        s.close()
