"""Unit tests of the pure pieces: selectors, patches, path parsing, schema decoding, strategy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .patches import merge_patch, strategic_merge
from .rest import parse_bool, parse_path
from .schema import decode
from .selectors import SelectorError, compile_label_selector_object, parse_field_selector, parse_label_selector
from .strategy import generate_name, parse_quantity, pod_qos_class

label_names = st.sampled_from(["app", "tier", "example.com/team", "x"])
label_values = st.sampled_from(["", "a", "b", "web-1", "v1.2"])
label_maps = st.dictionaries(label_names, label_values, max_size=4)


@given(labels=label_maps, key=label_names, value=label_values.filter(bool))
def test_equality_and_set_forms_agree(labels: dict[str, str], key: str, value: str) -> None:
    def sel(text: str) -> bool:
        m = parse_label_selector(text)
        assert m is not None
        return m(labels)

    assert sel(f"{key}={value}") == sel(f"{key} in ({value})") == (labels.get(key) == value)
    assert sel(f"{key}!={value}") == sel(f"{key} notin ({value})") == (labels.get(key) != value)
    assert sel(key) == (key in labels) != sel(f"!{key}")


@given(
    labels=label_maps,
    selector=st.fixed_dictionaries(
        {
            "matchLabels": st.dictionaries(label_names, label_values.filter(bool), max_size=2),
            "matchExpressions": st.lists(
                st.fixed_dictionaries(
                    {
                        "key": label_names,
                        "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
                        "values": st.lists(label_values.filter(bool), min_size=1, max_size=2),
                    }
                ),
                max_size=2,
            ),
        }
    ),
)
def test_label_selector_object_matches_its_string_form(labels: dict[str, str], selector: dict[str, Any]) -> None:
    parts = [f"{k}={v}" for k, v in selector["matchLabels"].items()]
    for e in selector["matchExpressions"]:
        op, k, vals = e["operator"], e["key"], ",".join(e["values"])
        parts.append(
            {"In": f"{k} in ({vals})", "NotIn": f"{k} notin ({vals})", "Exists": k, "DoesNotExist": f"!{k}"}[op]
        )
    obj = compile_label_selector_object(selector)
    text = parse_label_selector(",".join(parts))
    expected = text(labels) if text else True
    assert (obj(labels) if obj else True) == expected


def test_selector_errors() -> None:
    for bad in ("app in ()", "a b", "app in (x", "x=y)", "-bad=1", "a=b,", "toolong=" + "v" * 64):
        with pytest.raises(SelectorError):
            parse_label_selector(bad)
    with pytest.raises(SelectorError, match="field label not supported"):
        parse_field_selector("spec.host=x", ("spec.nodeName",))
    with pytest.raises(SelectorError):
        compile_label_selector_object({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})


def test_field_selector_escapes_and_empty_values() -> None:
    m = parse_field_selector(r"metadata.name=a\,b\=c", ())
    assert m is not None
    assert m({"metadata": {"name": "a,b=c"}}) and not m({"metadata": {"name": "a"}})
    unscheduled = parse_field_selector("spec.nodeName=", ("spec.nodeName",))
    assert unscheduled is not None
    assert unscheduled({"spec": {}}) and not unscheduled({"spec": {"nodeName": "n"}})
    boolean = parse_field_selector("spec.unschedulable=true", ("spec.unschedulable",))
    assert boolean is not None and boolean({"spec": {"unschedulable": True}})
    assert parse_field_selector("", ()) is None and parse_label_selector("  ") is None


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7386 appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result


def test_merge_patch_does_not_mutate_its_input() -> None:
    target = {"metadata": {"labels": {"a": "1"}}}
    merge_patch(target, {"metadata": {"labels": {"b": "2"}}})
    assert target == {"metadata": {"labels": {"a": "1"}}}


def test_strategic_merge_directives() -> None:
    pod = {
        "metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
        "spec": {
            "containers": [
                {"name": "app", "image": "a:1", "env": [{"name": "K", "value": "1"}]},
                {"name": "side", "image": "s:1"},
            ],
            "tolerations": [{"key": "t1"}],
        },
    }
    patched = strategic_merge(
        pod,
        {
            "metadata": {"finalizers": ["b", "a"], "labels": {"$retainKeys": ["x"]}},
            "spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": [
                    {"name": "app", "env": [{"name": "K2", "value": "2"}]},
                    {"name": "side", "$patch": "delete"},
                ],
                "tolerations": [{"key": "t2"}],  # no merge key: replaced
            },
        },
    )
    assert patched["metadata"]["finalizers"] == ["a", "b"]
    assert patched["metadata"]["labels"] == {"x": "1"}
    assert patched["spec"]["containers"] == [
        {"name": "app", "image": "a:1", "env": [{"name": "K", "value": "1"}, {"name": "K2", "value": "2"}]}
    ]
    assert patched["spec"]["tolerations"] == [{"key": "t2"}]
    assert strategic_merge(patched, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})["metadata"][
        "finalizers"
    ] == ["b"]
    assert strategic_merge(pod, {"spec": {"$patch": "replace", "containers": []}})["spec"] == {"containers": []}
    assert pod["spec"]["containers"][1]["name"] == "side"  # input untouched


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/pods", ("", "v1", "pods", "", "", "")),
        ("/api/v1/namespaces", ("", "v1", "namespaces", "", "", "")),
        ("/api/v1/namespaces/ns1", ("", "v1", "namespaces", "", "ns1", "")),
        ("/api/v1/namespaces/ns1/status", ("", "v1", "namespaces", "", "ns1", "status")),
        ("/api/v1/namespaces/ns1/pods", ("", "v1", "pods", "ns1", "", "")),
        ("/api/v1/namespaces/ns1/pods/p/binding", ("", "v1", "pods", "ns1", "p", "binding")),
        ("/apis/apps/v1/namespaces/ns1/deployments/d", ("apps", "v1", "deployments", "ns1", "d", "")),
        ("/apis/coordination.k8s.io/v1/leases", ("coordination.k8s.io", "v1", "leases", "", "", "")),
        ("/api/v1/nodes/n1/status", ("", "v1", "nodes", "", "n1", "status")),
    ],
)
def test_parse_path(path: str, expected: tuple[str, ...]) -> None:
    info = parse_path(path)
    assert info is not None
    assert (info.group, info.version, info.resource, info.namespace, info.name, info.subresource) == expected


def test_parse_path_rejects_non_resource_paths() -> None:
    for p in ("/api", "/api/v1", "/apis/apps/v1", "/version", "/api/v1/namespaces/a/pods/b/c/d"):
        assert parse_path(p) is None
    assert parse_path("/api/v1/watch/namespaces/a/pods").legacy_watch  # type: ignore[union-attr]


def test_parse_bool_follows_go() -> None:
    assert parse_bool("w", "True") and parse_bool("w", "1") and not parse_bool("w", "false")
    assert not parse_bool("w", None)
    with pytest.raises(Exception, match="Invalid value"):
        parse_bool("w", "yes")


def test_schema_decode_reports_nested_unknown_fields_and_keeps_known_ones() -> None:
    obj = {
        "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1},
        "spec": {
            "containers": [{"name": "c", "image": "i", "qos": "gold", "resources": {"limits": {"memory": 1073741824}}}],
            "qosResources": [],
            "nodeName": None,
        },
    }
    pruned, unknown, errors = decode(obj, "v1", "Pod")
    assert unknown == ["metadata.bogus", "spec.containers[0].qos", "spec.qosResources"]
    assert errors == []
    assert pruned["spec"]["containers"][0] == {
        "name": "c",
        "image": "i",
        "resources": {"limits": {"memory": "1073741824"}},
    }
    assert "nodeName" not in pruned["spec"]
    assert obj["metadata"]["bogus"] == 1  # input untouched
    _, _, errors = decode({"spec": {"containers": "nope", "priority": "high"}}, "v1", "Pod")
    assert len(errors) == 2


def test_quantities_and_qos_class() -> None:
    assert parse_quantity("1Gi") == 2**30 and parse_quantity("129e6") == 129_000_000
    assert parse_quantity("100m") * 10 == 1 and parse_quantity("1.5Gi") == 1.5 * 2**30
    assert parse_quantity("12 Mi") is None
    both = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}}
    assert pod_qos_class({"containers": [{"resources": both}]}) == "Guaranteed"
    assert pod_qos_class({"containers": [{"resources": both}, {"resources": {}}]}) == "Burstable"
    assert pod_qos_class({"containers": [{}]}) == "BestEffort"


def test_generated_names_are_capped() -> None:
    name = generate_name("x" * 80)
    assert len(name) == 63 and name.startswith("x" * 58)
