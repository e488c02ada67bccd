from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.core.annotations import CARRIER_CONTAINER_PREFIX, CARRIER_POD
from qosgate.core.errors import InvalidError
from qosgate.core.qosresources import (
    ClassAssignments,
    QosRequests,
    class_assignments,
    class_name_problem,
    container_names,
    extract_requests,
    parse_carrier,
    pod_class_assignments,
    qualified_name_problem,
)

PATH = f"metadata.annotations[{CARRIER_POD}]"


def pod(annotations: dict[str, Any] | None = None, *, qos: Any = None, containers: list[dict[str, Any]] | None = None,
        init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers if containers is not None else [{"name": "app"}]}
    if init is not None:
        spec["initContainers"] = init
    if qos is not None:
        spec["qosResources"] = qos
    return {"metadata": {"name": "p", "annotations": annotations or {}}, "spec": spec}


def container(name: str, qos: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name}
    if qos is not None:
        result["resources"] = {"qosResources": qos}
    return result


def errors_of(pod_object: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidError) as info:
        extract_requests(pod_object)
    return [(e.path, e.message) for e in info.value.errors]


# --- qualified names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["memory-qos", "a", "A.b_c-9", "x" * 63, "example.com/blockio",
                                  "a.b.c/X_y", "a" * 253 + "/n", "1.2/3"])
def test_valid_qualified_names_have_no_problem(name: str) -> None:
    assert qualified_name_problem(name) is None


@pytest.mark.parametrize("name", ["x" * 64, "-a", "a-", "_a", "a b", "a/", "example.com/" + "x" * 64, "a/-b"])
def test_name_part_longer_than_63_or_not_alphanumeric_at_both_ends_is_rejected(name: str) -> None:
    assert "name part" in (qualified_name_problem(name) or "")


@pytest.mark.parametrize("name", ["/a", "Example.com/a", "a_b.com/x", "-a.com/x", "a..b/x", "a.com./x",
                                  "a/b/c", "a" * 254 + "/n"])
def test_prefix_must_be_a_dns_subdomain_of_at_most_253_characters(name: str) -> None:
    assert "prefix" in (qualified_name_problem(name) or "")


@pytest.mark.parametrize("name", ["", None, 5, ["a"]])
def test_empty_or_non_string_qualified_name_is_rejected(name: object) -> None:
    assert qualified_name_problem(name) == "must be a non-empty string"


# --- class names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gold", "G", "a.b-c_d", "x" * 63, "0"])
def test_valid_class_names_have_no_problem(name: str) -> None:
    assert class_name_problem(name) is None


@pytest.mark.parametrize("name", ["x" * 64, "-gold", "gold-", "go ld", "gold/x", "göld"])
def test_invalid_class_names_are_rejected_quoting_the_name(name: str) -> None:
    assert repr(name) in (class_name_problem(name) or "")


@pytest.mark.parametrize("name", ["", None, 1])
def test_empty_or_non_string_class_is_rejected(name: object) -> None:
    assert class_name_problem(name) == "class must be a non-empty string"


# --- carrier parsing ------------------------------------------------------------------------------------


def test_carrier_single_pair() -> None:
    assert parse_carrier("memory-qos=gold", PATH) == {"memory-qos": "gold"}


def test_carrier_tolerates_spaces_around_pairs_names_and_classes() -> None:
    parsed = parse_carrier("  memory-qos = gold ,  example.com/blockio=slow ", PATH)
    assert parsed == {"memory-qos": "gold", "example.com/blockio": "slow"}


def test_carrier_keeps_the_users_order() -> None:
    assert list(parse_carrier("b=x,a=y,c=z", PATH)) == ["b", "a", "c"]


def test_carrier_resource_named_twice_is_rejected() -> None:
    with pytest.raises(InvalidError, match="'memory-qos' appears more than once"):
        parse_carrier("memory-qos=gold,memory-qos=silver", PATH)


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_carrier_is_rejected(value: str) -> None:
    with pytest.raises(InvalidError, match="is empty"):
        parse_carrier(value, PATH)


@pytest.mark.parametrize("value", ["memory-qos", "memory-qos:gold", "memory-qos=gold,"])
def test_carrier_pair_without_equals_is_rejected(value: str) -> None:
    with pytest.raises(InvalidError, match="not of the form name=class") as info:
        parse_carrier(value, PATH)
    assert info.value.errors[0].path == PATH


def test_carrier_reports_every_bad_pair_at_once() -> None:
    with pytest.raises(InvalidError) as info:
        parse_carrier("nothing,-bad=gold,ok=-bad,ok=fine,ok=again", PATH)
    messages = [e.message for e in info.value.errors]
    assert len(messages) == 4
    assert "'nothing' is not of the form name=class" in messages[0]
    assert "'-bad'" in messages[1]
    assert "class '-bad'" in messages[2]
    assert "appears more than once" in messages[3]
    assert all(e.path == PATH for e in info.value.errors)


def test_carrier_class_with_extra_equals_is_rejected() -> None:
    with pytest.raises(InvalidError, match="class 'gold=x'"):
        parse_carrier("memory-qos=gold=x", PATH)


@pytest.mark.parametrize("value", [None, 3, ["memory-qos=gold"]])
def test_non_string_carrier_is_rejected(value: object) -> None:
    with pytest.raises(InvalidError, match="must be a string"):
        parse_carrier(value, PATH)


# --- native fields --------------------------------------------------------------------------------------


def test_native_pod_level_field_is_read() -> None:
    requests = extract_requests(pod(qos=[{"name": "memory-qos", "class": "gold"}]))
    assert requests.pod == {"memory-qos": "gold"}
    assert requests.containers == {}


def test_native_container_level_field_is_read_for_app_and_init_containers() -> None:
    requests = extract_requests(pod(
        containers=[container("app", [{"name": "memory-qos", "class": "silver"}])],
        init=[container("setup", [{"name": "memory-qos", "class": "bronze"}])]))
    assert requests.containers == {"app": {"memory-qos": "silver"}, "setup": {"memory-qos": "bronze"}}


def test_pod_level_class_is_the_default_and_a_container_entry_overrides_it() -> None:
    requests = extract_requests(pod(
        qos=[{"name": "memory-qos", "class": "gold"}, {"name": "example.com/blockio", "class": "slow"}],
        containers=[container("app", [{"name": "memory-qos", "class": "bronze"}]), container("side")]))
    assert requests.effective("app") == {"memory-qos": "bronze", "example.com/blockio": "slow"}
    assert requests.effective("side") == {"memory-qos": "gold", "example.com/blockio": "slow"}


def test_native_field_that_is_not_a_list_is_rejected_with_its_path() -> None:
    assert errors_of(pod(qos={"name": "memory-qos"})) == [("spec.qosResources", "must be a list of {name, class}")]


def test_native_entries_are_checked_one_by_one_with_indexed_paths() -> None:
    errors = errors_of(pod(qos=["gold", {"name": "-x", "class": "gold"}, {"name": "memory-qos", "class": ""},
                                {"name": "memory-qos", "class": "gold"}, {"name": "memory-qos", "class": "silver"}]))
    assert [path for path, _ in errors] == ["spec.qosResources[0]", "spec.qosResources[1].name",
                                            "spec.qosResources[2].class", "spec.qosResources[4].name"]
    assert "appears more than once" in errors[-1][1]


def test_native_container_entry_errors_name_the_container_path() -> None:
    errors = errors_of(pod(init=[container("i", [{"name": "memory-qos"}])],
                           containers=[container("a", "memory-qos=gold")]))
    assert [path for path, _ in errors] == ["spec.initContainers[0].resources.qosResources[0].class",
                                            "spec.containers[0].resources.qosResources"]


# --- carrier annotations on pods ------------------------------------------------------------------------


def test_pod_and_container_carriers_are_read() -> None:
    requests = extract_requests(pod({CARRIER_POD: "memory-qos=gold", CARRIER_CONTAINER_PREFIX + "app": "x=y"}))
    assert requests.pod == {"memory-qos": "gold"}
    assert requests.containers == {"app": {"x": "y"}}
    assert requests.effective("app") == {"memory-qos": "gold", "x": "y"}


def test_container_carrier_may_name_an_init_container() -> None:
    requests = extract_requests(pod({CARRIER_CONTAINER_PREFIX + "setup": "memory-qos=gold"},
                                    init=[container("setup")]))
    assert requests.containers == {"setup": {"memory-qos": "gold"}}


def test_carrier_naming_an_unknown_container_is_rejected_listing_the_real_ones() -> None:
    key = CARRIER_CONTAINER_PREFIX + "ghost"
    errors = errors_of(pod({key: "memory-qos=gold"}, containers=[container("web"), container("db")]))
    assert errors == [(f"metadata.annotations[{key}]",
                       "names container 'ghost', which the pod does not have (containers: db, web)")]


def test_carrier_and_native_field_that_agree_are_accepted() -> None:
    requests = extract_requests(pod({CARRIER_POD: "memory-qos=gold", CARRIER_CONTAINER_PREFIX + "app": "x=y"},
                                    qos=[{"name": "memory-qos", "class": "gold"}],
                                    containers=[container("app", [{"name": "x", "class": "y"}])]))
    assert requests.pod == {"memory-qos": "gold"}
    assert requests.containers == {"app": {"x": "y"}}


def test_carrier_and_native_field_that_conflict_are_rejected_naming_both_classes() -> None:
    app_key = CARRIER_CONTAINER_PREFIX + "app"
    errors = errors_of(pod({CARRIER_POD: "memory-qos=silver", app_key: "x=z"},
                           qos=[{"name": "memory-qos", "class": "gold"}],
                           containers=[container("app", [{"name": "x", "class": "y"}])]))
    assert errors == [
        (PATH, "resource 'memory-qos': carrier says 'silver' but qosResources says 'gold'"),
        (f"metadata.annotations[{app_key}]", "resource 'x': carrier says 'z' but qosResources says 'y'"),
    ]


def test_every_carrier_problem_in_a_pod_is_reported_at_once() -> None:
    errors = errors_of(pod({CARRIER_POD: "memory-qos", CARRIER_CONTAINER_PREFIX + "ghost": "a=b",
                            CARRIER_CONTAINER_PREFIX + "app": ""}))
    assert [path for path, _ in errors] == [PATH, f"metadata.annotations[{CARRIER_CONTAINER_PREFIX}ghost]",
                                            f"metadata.annotations[{CARRIER_CONTAINER_PREFIX}app]"]


def test_foreign_annotations_are_ignored() -> None:
    requests = extract_requests(pod({"example.com/x": "memory-qos=gold", "qos-resources.qosgate.io.x": "junk"}))
    assert not requests


def test_pod_without_requests_is_falsy() -> None:
    assert not extract_requests(pod())
    assert not QosRequests(pod={}, containers={"app": {}})


def test_non_mapping_annotations_are_rejected() -> None:
    pod_object = pod()
    pod_object["metadata"]["annotations"] = ["memory-qos=gold"]
    assert errors_of(pod_object)[0][0] == "metadata.annotations"


def test_container_names_lists_init_then_app_containers() -> None:
    spec = pod(containers=[container("a"), {"image": "no-name"}], init=[container("i")])["spec"]
    assert container_names(spec) == ["i", "a"]


# --- class assignments (what quotas count) -------------------------------------------------------------


def test_pod_level_class_counts_once_per_pod_whatever_the_number_of_containers() -> None:
    requests = extract_requests(pod({CARRIER_POD: "memory-qos=gold"},
                                    containers=[container("a"), container("b"), container("c")]))
    assignments = class_assignments(requests)
    assert assignments.pod_level == (("memory-qos", "gold"),)
    assert assignments.container_level == ()


def test_container_level_classes_count_once_per_container() -> None:
    requests = extract_requests(pod({CARRIER_CONTAINER_PREFIX + "a": "memory-qos=silver",
                                     CARRIER_CONTAINER_PREFIX + "b": "memory-qos=silver,x=y"},
                                    containers=[container("a"), container("b")]))
    assignments = class_assignments(requests)
    assert assignments.pod_level == ()
    assert sorted(assignments.container_level) == [("memory-qos", "silver"), ("memory-qos", "silver"), ("x", "y")]
    assert assignments.distinct == {("memory-qos", "silver"), ("x", "y")}


def test_pod_and_container_levels_are_counted_separately() -> None:
    annotations = {CARRIER_POD: "memory-qos=gold", CARRIER_CONTAINER_PREFIX + "a": "memory-qos=bronze"}
    requests = extract_requests(pod(annotations, containers=[container("a"), container("b")]))
    assignments = class_assignments(requests)
    assert assignments.pod_level == (("memory-qos", "gold"),)
    assert assignments.container_level == (("memory-qos", "bronze"),)
    assert assignments.distinct == {("memory-qos", "gold"), ("memory-qos", "bronze")}


def test_unreadable_pod_counts_nothing_for_quotas() -> None:
    assert pod_class_assignments(pod({CARRIER_POD: "broken"})) == ClassAssignments()


# --- property -------------------------------------------------------------------------------------------

_LOCAL = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,12}[A-Za-z0-9])?", fullmatch=True)
_PREFIX = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?){0,2}",
                        fullmatch=True)
QUALIFIED = st.one_of(_LOCAL, st.builds(lambda p, n: f"{p}/{n}", _PREFIX, _LOCAL))
CLASS = _LOCAL
SPACE = st.sampled_from(["", " ", "  "])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(QUALIFIED, CLASS, min_size=1, max_size=6), st.data())
def test_formatted_carrier_parses_back_to_the_same_mapping(classes: dict[str, str], data: st.DataObject) -> None:
    for name, klass in classes.items():
        assert qualified_name_problem(name) is None
        assert class_name_problem(klass) is None
    pairs = [f"{data.draw(SPACE)}{name}{data.draw(SPACE)}={data.draw(SPACE)}{klass}{data.draw(SPACE)}"
             for name, klass in classes.items()]
    assert parse_carrier(",".join(pairs), PATH) == classes
