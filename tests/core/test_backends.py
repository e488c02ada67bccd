from __future__ import annotations

from typing import Any

import orjson
import pytest

from qosgate.core.annotations import (
    KOORD_MEMORY_QOS,
    KOORD_QOS_CLASS_LABEL,
    NRI_CLASS_PREFIX,
    NRI_MEMORY_HIGH_PREFIX,
    NRI_MEMORY_MIN_PREFIX,
)
from qosgate.core.backends import render_backends, render_koordinator, render_nri_memory_qos
from qosgate.core.catalog import DEFAULT_CATALOG, Catalog, parse_catalog
from qosgate.core.compile import ContainerPlan
from qosgate.core.errors import InvalidError

GI = 2**30


def catalog(*backends: str) -> Catalog:
    return parse_catalog({"backends": list(backends), "resources": [{"name": "memory-qos", "classes": [
        {"name": "gold", "memoryMinPercent": 100, "koordinatorQoSClass": "LSR"},
        {"name": "silver", "memoryMinPercent": 50, "throttlePercent": 90},
        {"name": "bronze", "nriClass": "bronze", "koordinatorQoSClass": "BE"},
    ]}]})


def plan(name: str = "app", index: int = 0, *, memory_class: str | None = "gold", nri_class: str | None = None,
         limit: int | None = 2 * GI, memory_min: int = GI, memory_high: int | None = None,
         **extra: Any) -> ContainerPlan:
    fields: dict[str, Any] = {
        "name": name, "kind": "container", "path": f"spec.containers[{index}]",
        "classes": {"memory-qos": memory_class} if memory_class else {}, "request": GI, "limit": limit,
        "memory_min": memory_min, "memory_high": memory_high, "nri_class": nri_class, "memory_class": memory_class,
    }
    fields.update(extra)
    return ContainerPlan(**fields)


# --- nri-memory-qos -------------------------------------------------------------------------------------


def test_nri_writes_memory_min_and_memory_high_per_container() -> None:
    rendered = render_nri_memory_qos([plan("a", memory_min=GI), plan("b", 1, memory_min=5, memory_high=8192)])
    assert rendered == {
        NRI_MEMORY_MIN_PREFIX + "a": str(GI),
        NRI_MEMORY_MIN_PREFIX + "b": "5",
        NRI_MEMORY_HIGH_PREFIX + "b": "8192",
    }


def test_nri_annotation_keys_are_the_plugin_keys() -> None:
    rendered = render_nri_memory_qos([plan("web", nri_class="bronze", memory_high=4096)])
    assert set(rendered) == {"class.memory-qos.nri.io/web", "memory.min.memory-qos.nri.io/web",
                             "memory.high.memory-qos.nri.io/web"}


def test_nri_omits_a_zero_memory_min() -> None:
    assert render_nri_memory_qos([plan(memory_min=0)]) == {}


def test_nri_class_is_written_for_a_container_with_a_limit() -> None:
    rendered = render_nri_memory_qos([plan(memory_class="bronze", nri_class="bronze", memory_min=0)])
    assert rendered == {NRI_CLASS_PREFIX + "app": "bronze"}


def test_nri_class_without_a_limit_is_denied_for_each_such_container() -> None:
    with pytest.raises(InvalidError) as info:
        render_nri_memory_qos([plan("a", 0, memory_class="bronze", nri_class="bronze", limit=None),
                               plan("b", 1, limit=None),
                               plan("c", 2, memory_class="bronze", nri_class="bronze", limit=None)])
    assert [e.path for e in info.value.errors] == ["spec.containers[0].resources.limits.memory",
                                                   "spec.containers[2].resources.limits.memory"]
    assert "container 'a' uses class 'bronze'" in info.value.errors[0].message
    assert "memory limit" in info.value.errors[0].message


def test_nri_class_denial_uses_the_init_container_path() -> None:
    with pytest.raises(InvalidError) as info:
        render_nri_memory_qos([plan("i", kind="init", path="spec.initContainers[3]", nri_class="bronze", limit=None)])
    assert info.value.errors[0].path == "spec.initContainers[3].resources.limits.memory"


# --- koordinator ----------------------------------------------------------------------------------------


def test_koordinator_renders_the_label_and_exact_memory_qos_json() -> None:
    annotations, labels = render_koordinator([plan("a"), plan("b", 1)], catalog("koordinator"))
    assert labels == {KOORD_QOS_CLASS_LABEL: "LSR"}
    assert annotations == {KOORD_MEMORY_QOS: '{"policy":"auto","minLimitPercent":100,"throttlingPercent":0}'}


def test_koordinator_policy_carries_the_class_percentages() -> None:
    annotations, labels = render_koordinator([plan(memory_class="silver")], catalog("koordinator"))
    assert orjson.loads(annotations[KOORD_MEMORY_QOS]) == {"policy": "auto", "minLimitPercent": 50,
                                                           "throttlingPercent": 90}
    assert labels == {KOORD_QOS_CLASS_LABEL: "LS"}


def test_koordinator_denies_containers_with_different_classes() -> None:
    with pytest.raises(InvalidError) as info:
        render_koordinator([plan("a", memory_class="silver"), plan("b", 1, memory_class="gold")],
                           catalog("koordinator"))
    assert str(info.value) == ("qosResources: the koordinator backend applies one memory class per pod, but "
                               "containers resolve to gold, silver; use one memory-qos class for the pod")


def test_koordinator_denies_a_pod_where_only_some_containers_have_a_class() -> None:
    # The policy is pod-wide: the unclassed container would get gold's protection without it being counted.
    with pytest.raises(InvalidError) as info:
        render_koordinator([plan("a"), plan("sidecar", 1, memory_class=None, memory_min=0)], catalog("koordinator"))
    assert "gold, no class (sidecar)" in str(info.value)


def test_koordinator_renders_nothing_without_a_memory_class() -> None:
    assert render_koordinator([plan(memory_class=None)], catalog("koordinator")) == ({}, {})


def test_koordinator_renders_nothing_for_a_catalog_without_a_memory_resource() -> None:
    no_memory = parse_catalog({"backends": ["koordinator"],
                               "resources": [{"name": "example.com/blockio", "classes": [{"name": "slow"}]}]})
    assert render_koordinator([plan(memory_class=None)], no_memory) == ({}, {})


# --- dispatch -------------------------------------------------------------------------------------------


def test_default_catalog_renders_nri_annotations_and_no_labels() -> None:
    annotations, labels = render_backends([plan()], DEFAULT_CATALOG)
    assert annotations == {NRI_MEMORY_MIN_PREFIX + "app": str(GI)}
    assert labels == {}


def test_nri_and_koordinator_backends_render_together() -> None:
    annotations, labels = render_backends([plan()], catalog("nri-memory-qos", "koordinator"))
    assert set(annotations) == {NRI_MEMORY_MIN_PREFIX + "app", KOORD_MEMORY_QOS}
    assert labels == {KOORD_QOS_CLASS_LABEL: "LSR"}


def test_kubelet_backend_renders_nothing() -> None:
    assert render_backends([plan(memory_high=4096)], catalog("kubelet")) == ({}, {})


def test_errors_of_every_backend_are_reported_together() -> None:
    plans = [plan("a", memory_class="bronze", nri_class="bronze", limit=None), plan("b", 1, memory_class="gold")]
    with pytest.raises(InvalidError) as info:
        render_backends(plans, catalog("nri-memory-qos", "koordinator"))
    assert [e.path for e in info.value.errors] == ["spec.containers[0].resources.limits.memory", "qosResources"]
