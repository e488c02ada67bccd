from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.webhook.patch import escape_pointer, sync_owned_map

ANNOTATIONS = "/metadata/annotations"


def pod(annotations: dict[str, str] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p", "namespace": "ns"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"containers": [{"name": "app"}]}}


def apply(document: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    return jsonpatch.JsonPatch(ops).apply(copy.deepcopy(document))


# --- JSON pointer escaping ------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "token"), [
    ("plain", "plain"),
    ("qosgate.io/memory-min", "qosgate.io~1memory-min"),
    ("a~b", "a~0b"),
    ("a/~b", "a~1~0b"),     # `/` first would give a~1~b → a~01~0b
    ("~1", "~01"),          # a literal "~1" must not come back as "/"
    ("~/~/", "~0~1~0~1"),
    ("", ""),
])
def test_escape_replaces_tilde_before_slash(key: str, token: str) -> None:
    assert escape_pointer(key) == token


@pytest.mark.parametrize("key", ["a/~b", "~1", "x~0y/z", "memory.min.memory-qos.nri.io/app"])
def test_escaped_key_addresses_exactly_that_key_for_a_real_json_patch_library(key: str) -> None:
    result = apply(pod({}), [{"op": "add", "path": f"{ANNOTATIONS}/{escape_pointer(key)}", "value": "v"}])
    assert result["metadata"]["annotations"] == {key: "v"}


# --- sync_owned_map -------------------------------------------------------------------------------------


def test_absent_map_is_added_whole() -> None:
    ops = sync_owned_map(None, {"qosgate.io/memory-min": "1", "a/b": "2"}, set(), ANNOTATIONS)
    assert ops == [{"op": "add", "path": ANNOTATIONS, "value": {"qosgate.io/memory-min": "1", "a/b": "2"}}]


def test_absent_map_and_nothing_desired_yields_no_ops() -> None:
    assert sync_owned_map(None, {}, set(), ANNOTATIONS) == []


def test_existing_empty_map_gets_per_key_adds() -> None:
    ops = sync_owned_map({}, {"qosgate.io/memory-min": "1"}, set(), ANNOTATIONS)
    assert ops == [{"op": "add", "path": f"{ANNOTATIONS}/qosgate.io~1memory-min", "value": "1"}]


def test_changed_value_is_replaced() -> None:
    ops = sync_owned_map({"k": "old"}, {"k": "new"}, {"k"}, ANNOTATIONS)
    assert ops == [{"op": "replace", "path": f"{ANNOTATIONS}/k", "value": "new"}]


def test_equal_value_yields_no_op() -> None:
    assert sync_owned_map({"k": "v", "other": "x"}, {"k": "v"}, {"k"}, ANNOTATIONS) == []


def test_owned_key_not_desired_is_removed() -> None:
    ops = sync_owned_map({"k": "v", "stale": "1"}, {"k": "v"}, {"k", "stale"}, ANNOTATIONS)
    assert ops == [{"op": "remove", "path": f"{ANNOTATIONS}/stale"}]


def test_foreign_keys_are_never_touched() -> None:
    current = {"team": "a", "qosgate.io/memory-min": "5", "example.com/x": "y"}
    ops = sync_owned_map(current, {}, {"qosgate.io/memory-min"}, ANNOTATIONS)
    assert ops == [{"op": "remove", "path": f"{ANNOTATIONS}/qosgate.io~1memory-min"}]


def test_removals_are_sorted_for_a_stable_patch() -> None:
    ops = sync_owned_map({"b": "1", "a": "1", "c": "1"}, {}, {"c", "a", "b"}, ANNOTATIONS)
    assert [op["path"] for op in ops] == [f"{ANNOTATIONS}/a", f"{ANNOTATIONS}/b", f"{ANNOTATIONS}/c"]


def test_patch_for_an_absent_map_applies_to_a_real_pod() -> None:
    desired = {"qosgate.io/memory-min": "1073741824", "memory.min.memory-qos.nri.io/app": "1073741824"}
    result = apply(pod(None), sync_owned_map(None, desired, set(), ANNOTATIONS))
    assert result["metadata"]["annotations"] == desired
    assert result["metadata"]["name"] == "p"


def test_mixed_patch_applies_to_a_real_pod_and_keeps_foreign_keys() -> None:
    current = {"team": "a", "a/~b": "keep", "qosgate.io/memory-min": "5", "qosgate.io/stale": "x",
               "memory.min.memory-qos.nri.io/app": "9"}
    desired = {"qosgate.io/memory-min": "7", "memory.min.memory-qos.nri.io/app": "9", "qosgate.io/resolved": "{}"}
    owned = {"qosgate.io/memory-min", "qosgate.io/stale", "memory.min.memory-qos.nri.io/app"}
    ops = sync_owned_map(current, desired, owned, ANNOTATIONS)
    result = apply(pod(current), ops)
    assert result["metadata"]["annotations"] == {"team": "a", "a/~b": "keep", **desired}
    assert {op["op"] for op in ops} == {"add", "replace", "remove"}


def test_patch_works_for_labels_too() -> None:
    document = pod({})
    document["metadata"]["labels"] = {"app": "web"}
    ops = sync_owned_map(document["metadata"]["labels"], {"koordinator.sh/qosClass": "LSR"}, set(),
                         "/metadata/labels")
    assert apply(document, ops)["metadata"]["labels"] == {"app": "web", "koordinator.sh/qosClass": "LSR"}


# --- property -------------------------------------------------------------------------------------------

# "-" alone is the array-append token, which the python jsonpatch library refuses even on objects; no annotation
# key can be "-" anyway (qualified names start with an alphanumeric).
KEY = st.text(alphabet="ab~/.-", min_size=1, max_size=6).filter(lambda key: key != "-")
VALUE = st.text(alphabet="xyz01", max_size=3)


@settings(max_examples=200, deadline=None)
@given(foreign=st.dictionaries(KEY, VALUE, max_size=4), owned=st.dictionaries(KEY, VALUE, max_size=4),
       desired=st.dictionaries(KEY, VALUE, max_size=4), absent=st.booleans())
def test_applied_patch_makes_owned_keys_exactly_desired_and_keeps_the_rest(
        foreign: dict[str, str], owned: dict[str, str], desired: dict[str, str], absent: bool) -> None:
    foreign = {k: v for k, v in foreign.items() if k not in owned and k not in desired}
    current = None if absent else {**foreign, **owned}
    ops = sync_owned_map(current, desired, set(owned) if current is not None else set(), ANNOTATIONS)
    result = apply(pod(current), ops)
    expected = desired if current is None else {**foreign, **desired}
    assert result["metadata"].get("annotations", {}) == expected
    # A second sync against the result has nothing left to do.
    again = result["metadata"].get("annotations")
    owned_now = set(desired) if again is not None else set()
    assert sync_owned_map(again, desired, owned_now, ANNOTATIONS) == []
