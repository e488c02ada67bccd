from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.core.catalog import (
    CATALOG_DATA_KEY,
    DEFAULT_CATALOG,
    Catalog,
    CatalogHolder,
    CatalogMemo,
    QosClass,
    catalog_from_configmap,
    load_catalog_yaml,
    parse_catalog,
)
from qosgate.core.errors import InvalidError
from qosgate.kube.catalog import load_catalog_file

GOOD_YAML = """\
backends: [koordinator]
protectablePercent: 80
resources:
- name: memory-qos
  classes:
  - {name: gold, memoryMinPercent: 100, koordinatorQoSClass: LSR}
  - {name: best-effort, koordinatorQoSClass: BE}
- name: example.com/blockio
  classes:
  - name: fast
  - name: slow
"""


def memory_resource(*classes: dict[str, Any], name: str = "memory-qos") -> dict[str, Any]:
    return {"name": name, "classes": list(classes) or [{"name": "gold", "memoryMinPercent": 100}]}


def errors_of(raw: object) -> dict[str, str]:
    """path (without the source prefix) → message, for every reported error."""
    with pytest.raises(InvalidError) as info:
        parse_catalog(raw)
    result = {}
    for error in info.value.errors:
        assert error.path.startswith("catalog")
        result[error.path.removeprefix("catalog").removeprefix(": ")] = error.message
    return result


def configmap(data: dict[str, str] | None) -> dict[str, Any]:
    cm: dict[str, Any] = {"metadata": {"namespace": "qosgate-system", "name": "qosgate-classes"}}
    if data is not None:
        cm["data"] = data
    return cm


# --- the default catalog --------------------------------------------------------------------------------


def test_default_catalog_defines_memory_qos_with_gold_silver_bronze() -> None:
    assert list(DEFAULT_CATALOG.resources) == ["memory-qos"]
    assert list(DEFAULT_CATALOG.resources["memory-qos"].classes) == ["gold", "silver", "bronze"]
    assert DEFAULT_CATALOG.memory_resource == "memory-qos"


def test_default_catalog_class_settings_match_the_design() -> None:
    classes = DEFAULT_CATALOG.resources["memory-qos"].classes
    assert classes["gold"] == QosClass("gold", memory_min_percent=100, throttle_percent=0, swap=False)
    assert classes["silver"] == QosClass("silver", memory_min_percent=50, throttle_percent=90, swap=False)
    assert classes["bronze"] == QosClass("bronze", memory_min_percent=0, nri_class="bronze")


def test_default_catalog_uses_the_nri_backend_with_annotated_accounting() -> None:
    assert DEFAULT_CATALOG.backends == ("nri-memory-qos",)
    assert DEFAULT_CATALOG.accounting == "annotated"
    assert DEFAULT_CATALOG.protectable_percent == 90


# --- a valid custom catalog -----------------------------------------------------------------------------


def test_valid_catalog_is_parsed_with_every_setting() -> None:
    catalog = load_catalog_yaml(GOOD_YAML)
    assert catalog.backends == ("koordinator",)
    assert catalog.protectable_percent == 80
    assert catalog.memory_resource == "memory-qos"
    assert catalog.resources["memory-qos"].classes["best-effort"].koordinator_qos_class == "BE"
    assert catalog.resources["memory-qos"].memory
    assert not catalog.resources["example.com/blockio"].memory


def test_class_fields_default_when_absent() -> None:
    catalog = parse_catalog({"resources": [memory_resource({"name": "plain"}, {"name": "g", "throttlePercent": 5})]})
    assert catalog.resources["memory-qos"].classes["plain"] == QosClass("plain")
    assert catalog.backends == ("nri-memory-qos",)


def test_a_catalog_without_memory_settings_has_no_memory_resource() -> None:
    catalog = parse_catalog({"resources": [{"name": "example.com/blockio", "classes": [{"name": "slow"}]}]})
    assert catalog.memory_resource is None


def test_kubelet_backend_means_kubelet_accounting() -> None:
    assert parse_catalog({"backends": ["kubelet"], "resources": [memory_resource()]}).accounting == "kubelet"


def test_lookup_returns_the_class() -> None:
    assert DEFAULT_CATALOG.lookup("memory-qos", "silver", "x").throttle_percent == 90


def test_lookup_of_an_unknown_resource_lists_the_known_ones() -> None:
    with pytest.raises(InvalidError) as info:
        DEFAULT_CATALOG.lookup("cpu-qos", "gold", "spec.qosResources[0]")
    assert str(info.value) == "spec.qosResources[0]: unknown QoS resource 'cpu-qos' (known: memory-qos)"


def test_lookup_of_an_unknown_class_lists_the_allowed_ones() -> None:
    with pytest.raises(InvalidError) as info:
        DEFAULT_CATALOG.lookup("memory-qos", "platinum", "p")
    assert str(info.value) == "p: unknown class 'platinum' for memory-qos (allowed: gold, silver, bronze)"


# --- validation: each error names its path --------------------------------------------------------------


@pytest.mark.parametrize("raw", [[], "resources", 5, None])
def test_non_mapping_document_is_rejected(raw: object) -> None:
    assert errors_of(raw) == {"": "must be a mapping with resources and backends"}


def test_empty_yaml_document_is_rejected_as_non_mapping() -> None:
    with pytest.raises(InvalidError, match="must be a mapping"):
        load_catalog_yaml("")


def test_yaml_syntax_error_is_reported_with_the_source() -> None:
    with pytest.raises(InvalidError) as info:
        load_catalog_yaml("resources: [\n  - name: x\n", "my.yaml")
    assert info.value.errors[0].path == "my.yaml"
    assert "not valid YAML" in info.value.errors[0].message


def test_unknown_fields_are_named_at_every_level() -> None:
    errors = errors_of({"resource": [], "resources": [{"name": "m", "clases": [], "classes": [
        {"name": "g", "memoryMin": 5}]}]})
    assert "resource" in errors
    assert "resources[0].clases" in errors
    assert "resources[0].classes[0].memoryMin" in errors
    assert all(message.startswith("unknown field (allowed: ") for message in errors.values())


@pytest.mark.parametrize("value", [101, -1, "50", 50.5, None, True, False])
def test_percent_outside_0_to_100_or_not_an_integer_is_rejected(value: object) -> None:
    errors = errors_of({"resources": [memory_resource({"name": "g", "memoryMinPercent": value,
                                                       "throttlePercent": value})]})
    assert set(errors) == {"resources[0].classes[0].memoryMinPercent", "resources[0].classes[0].throttlePercent"}
    assert errors["resources[0].classes[0].memoryMinPercent"] == f"must be an integer from 0 to 100, got {value!r}"


def test_protectable_percent_must_be_1_to_100() -> None:
    assert set(errors_of({"protectablePercent": 0, "resources": [memory_resource()]})) == {"protectablePercent"}
    assert set(errors_of({"protectablePercent": True, "resources": [memory_resource()]})) == {"protectablePercent"}


def test_duplicate_resource_is_rejected() -> None:
    errors = errors_of({"resources": [memory_resource(), memory_resource()]})
    assert errors == {"resources[1].name": "resource 'memory-qos' is defined more than once"}


def test_duplicate_class_is_rejected() -> None:
    errors = errors_of({"resources": [memory_resource({"name": "g"}, {"name": "s"}, {"name": "g"})]})
    assert errors == {"resources[0].classes[2].name": "class 'g' is defined more than once"}


@pytest.mark.parametrize("name", ["k8s.io/memory", "kubernetes.io/memory"])
def test_reserved_upstream_prefixes_are_rejected(name: str) -> None:
    errors = errors_of({"resources": [memory_resource(name=name)]})
    assert "reserved upstream" in errors["resources[0].name"]


def test_kubelet_backend_cannot_be_combined() -> None:
    errors = errors_of({"backends": ["kubelet", "nri-memory-qos"], "resources": [memory_resource()]})
    assert "cannot be combined" in errors["backends"]


def test_unknown_and_repeated_backends_are_rejected() -> None:
    errors = errors_of({"backends": ["nri-memory-qos", "cgroupfs", "nri-memory-qos"], "resources": [memory_resource()]})
    assert "unknown backend 'cgroupfs'" in errors["backends[1]"]
    assert errors["backends"] == "lists a backend more than once"


@pytest.mark.parametrize("backends", [[], "nri-memory-qos", None])
def test_backends_must_be_a_non_empty_list(backends: object) -> None:
    assert "non-empty list" in errors_of({"backends": backends, "resources": [memory_resource()]})["backends"]


def test_backend_given_as_a_mapping_is_reported_not_crashed_on() -> None:
    errors = errors_of({"backends": [{"name": "kubelet"}], "resources": [memory_resource()]})
    assert set(errors) == {"backends[0]"}


def test_swap_requires_an_nri_class() -> None:
    errors = errors_of({"resources": [memory_resource({"name": "g", "swap": True})]})
    assert errors == {"resources[0].classes[0].swap": "swap is granted through an NRI class: set nriClass too"}


def test_swap_must_be_a_boolean() -> None:
    errors = errors_of({"resources": [memory_resource({"name": "g", "swap": "yes", "nriClass": "g"})]})
    assert "must be true or false" in errors["resources[0].classes[0].swap"]


def test_invalid_nri_and_koordinator_classes_are_rejected() -> None:
    errors = errors_of({"resources": [memory_resource({"name": "g", "nriClass": "-x", "koordinatorQoSClass": "GOLD"})]})
    assert set(errors) == {"resources[0].classes[0].nriClass", "resources[0].classes[0].koordinatorQoSClass"}
    assert "LSE, LSR, LS, BE, SYSTEM" in errors["resources[0].classes[0].koordinatorQoSClass"]


def test_only_one_resource_may_carry_memory_settings() -> None:
    errors = errors_of({"resources": [memory_resource(), memory_resource(name="other-memory")]})
    assert errors == {"resources": "only one resource may give its classes memory settings, found: memory-qos, "
                                   "other-memory"}


@pytest.mark.parametrize("resources", [None, [], "memory-qos"])
def test_resources_must_be_a_non_empty_list(resources: object) -> None:
    assert errors_of({"resources": resources}) == {"resources": "must be a non-empty list"}


@pytest.mark.parametrize("classes", [None, [], {"name": "g"}])
def test_classes_must_be_a_non_empty_list(classes: object) -> None:
    assert errors_of({"resources": [{"name": "m", "classes": classes}]}) == {"resources[0].classes": "must be a "
                                                                                                     "non-empty list"}


def test_bad_resource_and_class_names_are_rejected() -> None:
    errors = errors_of({"resources": ["memory-qos", {"name": "Bad_Prefix/x", "classes": [{"name": "g"}]},
                                      {"name": "m", "classes": ["gold", {"name": "-g"}]}]})
    assert set(errors) == {"resources[0]", "resources[1].name", "resources[2].classes[0]",
                           "resources[2].classes[1].name"}


def test_every_error_in_a_catalog_is_reported_at_once() -> None:
    text = textwrap.dedent("""\
        backends: [kubelet, koordinator]
        protectablePercent: 101
        colour: blue
        resources:
        - name: memory-qos
          classes:
          - {name: gold, memoryMinPercent: true}
          - {name: gold}
          - {name: swappy, swap: true}
        - name: k8s.io/x
          classes: [{name: a}]
        - name: memory-qos
          classes: [{name: a}]
        - name: second-memory
          classes: [{name: a, throttlePercent: 150}]
        """)
    with pytest.raises(InvalidError) as info:
        load_catalog_yaml(text, "cm")
    paths = [e.path for e in info.value.errors]
    assert sorted(paths) == sorted([
        "cm: backends",
        "cm: protectablePercent",
        "cm: colour",
        "cm: resources[0].classes[0].memoryMinPercent",
        "cm: resources[0].classes[1].name",
        "cm: resources[0].classes[2].swap",
        "cm: resources[1].name",
        "cm: resources[2].name",
        "cm: resources[3].classes[0].throttlePercent",
        "cm: resources",
    ])


# --- loaders --------------------------------------------------------------------------------------------


def test_catalog_is_loaded_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(GOOD_YAML, encoding="utf-8")
    assert load_catalog_file(str(path)).backends == ("koordinator",)


def test_missing_catalog_file_is_named(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(InvalidError) as info:
        load_catalog_file(path)
    assert info.value.errors[0].path == path
    assert "cannot read catalog" in info.value.errors[0].message


def test_errors_in_a_file_are_prefixed_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("resources: []\n", encoding="utf-8")
    with pytest.raises(InvalidError) as info:
        load_catalog_file(str(path))
    assert info.value.errors[0].path == f"{path}: resources"


def test_catalog_is_loaded_from_the_configmap_key() -> None:
    assert isinstance(catalog_from_configmap(configmap({CATALOG_DATA_KEY: GOOD_YAML})), Catalog)


@pytest.mark.parametrize("data", [None, {}, {"other.yaml": GOOD_YAML}])
def test_configmap_without_the_catalog_key_is_rejected(data: dict[str, str] | None) -> None:
    with pytest.raises(InvalidError) as info:
        catalog_from_configmap(configmap(data))
    assert str(info.value) == "configmap qosgate-system/qosgate-classes: data: missing key 'catalog.yaml'"


def test_configmap_errors_name_the_configmap_and_key() -> None:
    with pytest.raises(InvalidError) as info:
        catalog_from_configmap(configmap({CATALOG_DATA_KEY: "resources: []"}))
    assert info.value.errors[0].path == "configmap qosgate-system/qosgate-classes: data[catalog.yaml]: resources"


# --- the holder keeps the last valid catalog ------------------------------------------------------------


def test_holder_starts_with_the_default_catalog() -> None:
    holder = CatalogHolder()
    assert holder.current is DEFAULT_CATALOG
    assert holder.last_error is None


def test_holder_swaps_in_a_valid_update() -> None:
    holder = CatalogHolder()
    assert holder.update_from_configmap(configmap({CATALOG_DATA_KEY: GOOD_YAML})) is None
    assert holder.current.backends == ("koordinator",)


@pytest.mark.parametrize("data", [{CATALOG_DATA_KEY: "resources: [\n"}, {CATALOG_DATA_KEY: "backends: [nope]"},
                                  {CATALOG_DATA_KEY: "backends: [{a: 1}]\nresources: []"}, {}])
def test_holder_keeps_the_last_valid_catalog_when_an_update_is_invalid(data: dict[str, str]) -> None:
    holder = CatalogHolder()
    holder.update_from_configmap(configmap({CATALOG_DATA_KEY: GOOD_YAML}))
    good = holder.current
    error = holder.update_from_configmap(configmap(data))
    assert error
    assert holder.last_error == error
    assert holder.current is good


def test_holder_clears_the_error_after_a_valid_update() -> None:
    holder = CatalogHolder()
    holder.update_from_configmap(configmap({}))
    assert holder.last_error
    holder.update_from_configmap(configmap({CATALOG_DATA_KEY: GOOD_YAML}))
    assert holder.last_error is None


# --- CatalogMemo: answers remembered per catalog --------------------------------------------------------


def test_memo_answers_only_for_the_catalog_it_was_decided_with() -> None:
    memo: CatalogMemo[str] = CatalogMemo()
    edited = replace(DEFAULT_CATALOG, protectable_percent=50)
    memo.put(b"pod", DEFAULT_CATALOG, "answer")
    assert memo.get(b"pod", DEFAULT_CATALOG) == "answer"
    assert memo.get(b"pod", edited) is None  # an equal-looking catalog object is still another version
    assert memo.get(b"other", DEFAULT_CATALOG) is None


def test_memo_forgets_the_least_recently_used_beyond_its_size() -> None:
    memo: CatalogMemo[int] = CatalogMemo(size=2)
    memo.put(b"a", DEFAULT_CATALOG, 1)
    memo.put(b"b", DEFAULT_CATALOG, 2)
    assert memo.get(b"a", DEFAULT_CATALOG) == 1  # a is now the most recent
    memo.put(b"c", DEFAULT_CATALOG, 3)
    assert len(memo) == 2
    assert memo.get(b"b", DEFAULT_CATALOG) is None
    assert (memo.get(b"a", DEFAULT_CATALOG), memo.get(b"c", DEFAULT_CATALOG)) == (1, 3)


def test_memo_never_remembers_an_entry_above_its_share_of_the_byte_budget() -> None:
    memo: CatalogMemo[int] = CatalogMemo(max_bytes=256 * 1024)
    memo.put(b"x" * 1025, DEFAULT_CATALOG, 1)  # above 256 KiB / 256
    assert memo.get(b"x" * 1025, DEFAULT_CATALOG) is None and len(memo) == 0
    memo.put(b"x" * 1024, DEFAULT_CATALOG, 2)
    assert memo.get(b"x" * 1024, DEFAULT_CATALOG) == 2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=400), max_size=300))
def test_memo_stays_within_its_entry_and_byte_bounds_whatever_is_put(keys: list[bytes]) -> None:
    memo: CatalogMemo[int] = CatalogMemo(size=50, max_bytes=25600)
    for index, key in enumerate(keys):
        memo.put(key, DEFAULT_CATALOG, index)
        assert len(memo) <= 50 and memo.key_bytes <= 25600
        assert memo.key_bytes == sum(len(k) for k in memo._entries)  # the running total never drifts
    if keys and len(keys[-1]) <= 100:
        assert memo.get(keys[-1], DEFAULT_CATALOG) is not None  # the newest entry is always remembered
