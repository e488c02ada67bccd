from __future__ import annotations

from typing import Any

import orjson
import pytest

from qosgate.core.annotations import (
    CARRIER_CONTAINER_PREFIX,
    CARRIER_POD,
    KOORD_MEMORY_QOS,
    KOORD_QOS_CLASS_LABEL,
    MEMORY_MIN,
    NRI_CLASS_PREFIX,
    NRI_MEMORY_HIGH_PREFIX,
    NRI_MEMORY_MIN_PREFIX,
    RESOLVED,
)
from qosgate.core.catalog import DEFAULT_CATALOG, Catalog, load_catalog_yaml
from qosgate.core.compile import compile_pod, resolved_summary
from qosgate.core.errors import InvalidError

MI = 2**20
GI = 2**30
# 1Gi + 0.9 × (2Gi − 1Gi), page aligned (architecture §2.3).
SILVER_HIGH_1GI_2GI = 498073 * 4096

KOORDINATOR = load_catalog_yaml("""\
backends: [koordinator]
resources:
- name: memory-qos
  classes:
  - {name: gold, memoryMinPercent: 100, koordinatorQoSClass: LSR}
  - {name: silver, memoryMinPercent: 50, throttlePercent: 90}
""")
KUBELET = load_catalog_yaml("""\
backends: [kubelet]
resources:
- name: memory-qos
  classes:
  - {name: gold, memoryMinPercent: 100}
  - {name: bronze, memoryMinPercent: 0}
- name: example.com/blockio
  classes: [{name: slow}]
""")
WITH_BLOCKIO = load_catalog_yaml("""\
resources:
- name: memory-qos
  classes:
  - {name: gold, memoryMinPercent: 100}
- name: example.com/blockio
  classes: [{name: slow}, {name: fast}]
""")


def ctr(name: str, request: str | None = None, limit: str | None = None, **extra: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if request is not None:
        resources["requests"] = {"memory": request}
    if limit is not None:
        resources["limits"] = {"memory": limit}
    return {"name": name, "image": "busybox", "resources": resources, **extra}


def pod(annotations: dict[str, str] | None = None, containers: list[dict[str, Any]] | None = None,
        init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers or [ctr("app", "1Gi", "2Gi")]}
    if init:
        spec["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": annotations or {}},
            "spec": spec}


def denial(pod_object: dict[str, Any], catalog: Catalog = DEFAULT_CATALOG) -> InvalidError:
    with pytest.raises(InvalidError) as info:
        compile_pod(pod_object, catalog)
    return info.value


# --- nri-memory-qos -------------------------------------------------------------------------------------


def test_gold_protects_the_whole_request_without_a_throttle() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=gold"}), DEFAULT_CATALOG)
    assert compiled.annotations == {
        MEMORY_MIN: str(GI),
        RESOLVED: '{"app":{"memory-qos":"gold"}}',
        NRI_MEMORY_MIN_PREFIX + "app": str(GI),
    }
    assert compiled.labels == {}
    assert compiled.memory_min == GI


def test_silver_protects_half_the_request_and_throttles_at_the_kep_point() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=silver"}), DEFAULT_CATALOG)
    assert compiled.annotations[MEMORY_MIN] == str(GI // 2)
    assert compiled.annotations[NRI_MEMORY_MIN_PREFIX + "app"] == str(GI // 2)
    assert compiled.annotations[NRI_MEMORY_HIGH_PREFIX + "app"] == str(SILVER_HIGH_1GI_2GI)


def test_silver_without_a_limit_gets_no_memory_high() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=silver"}, [ctr("app", "1Gi")]), DEFAULT_CATALOG)
    assert NRI_MEMORY_HIGH_PREFIX + "app" not in compiled.annotations
    assert compiled.annotations[NRI_MEMORY_MIN_PREFIX + "app"] == str(GI // 2)


def test_silver_with_requests_equal_to_limits_gets_no_memory_high() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=silver"}, [ctr("app", "1Gi", "1Gi")]), DEFAULT_CATALOG)
    assert NRI_MEMORY_HIGH_PREFIX + "app" not in compiled.annotations


def test_bronze_names_the_nri_class_and_protects_nothing() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=bronze"}), DEFAULT_CATALOG)
    assert compiled.annotations == {
        MEMORY_MIN: "0",
        RESOLVED: '{"app":{"memory-qos":"bronze"}}',
        NRI_CLASS_PREFIX + "app": "bronze",
    }


def test_nri_class_without_a_memory_limit_is_denied_with_the_container_path() -> None:
    error = denial(pod({CARRIER_POD: "memory-qos=bronze"}, [ctr("web", "1Gi", "2Gi"), ctr("db", "1Gi")]))
    assert [e.path for e in error.errors] == ["spec.containers[1].resources.limits.memory"]
    assert "'db'" in str(error)
    assert "'bronze'" in str(error)


def test_each_container_gets_its_own_annotations_from_its_effective_class() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=gold", CARRIER_CONTAINER_PREFIX + "db": "memory-qos=silver"},
                               [ctr("web", "256Mi"), ctr("db", "1Gi", "2Gi")]), DEFAULT_CATALOG)
    assert compiled.annotations[NRI_MEMORY_MIN_PREFIX + "web"] == str(256 * MI)
    assert compiled.annotations[NRI_MEMORY_MIN_PREFIX + "db"] == str(GI // 2)
    assert compiled.annotations[NRI_MEMORY_HIGH_PREFIX + "db"] == str(SILVER_HIGH_1GI_2GI)
    assert NRI_MEMORY_HIGH_PREFIX + "web" not in compiled.annotations
    assert compiled.annotations[MEMORY_MIN] == str(256 * MI + GI // 2)
    assert orjson.loads(compiled.annotations[RESOLVED]) == {"web": {"memory-qos": "gold"},
                                                           "db": {"memory-qos": "silver"}}


def test_native_qos_resources_compile_like_the_carrier() -> None:
    native = pod()
    native["spec"]["qosResources"] = [{"name": "memory-qos", "class": "gold"}]
    assert compile_pod(native, DEFAULT_CATALOG).annotations == \
        compile_pod(pod({CARRIER_POD: "memory-qos=gold"}), DEFAULT_CATALOG).annotations


def test_container_with_a_class_only_through_its_own_carrier_is_the_only_one_protected() -> None:
    compiled = compile_pod(pod({CARRIER_CONTAINER_PREFIX + "db": "memory-qos=gold"},
                               [ctr("web", "256Mi"), ctr("db", "1Gi")]), DEFAULT_CATALOG)
    assert compiled.annotations[MEMORY_MIN] == str(GI)
    assert NRI_MEMORY_MIN_PREFIX + "web" not in compiled.annotations
    assert orjson.loads(compiled.annotations[RESOLVED]) == {"web": {}, "db": {"memory-qos": "gold"}}


# --- the pod figure with init containers and sidecars ---------------------------------------------------


def test_pod_memory_min_follows_pod_requests_with_init_and_sidecar_containers() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=gold"}, [ctr("app", "1Gi")],
                               init=[ctr("proxy", "100Mi", restartPolicy="Always"), ctr("migrate", "2Gi")]),
                           DEFAULT_CATALOG)
    # app + sidecar = 1124Mi; plain init peak = 2048Mi + the sidecar already running = 2148Mi.
    assert compiled.memory_min == 2148 * MI
    assert compiled.annotations[MEMORY_MIN] == str(2148 * MI)
    assert [(p.name, p.kind, p.path) for p in compiled.containers] == [
        ("proxy", "sidecar", "spec.initContainers[0]"),
        ("migrate", "init", "spec.initContainers[1]"),
        ("app", "container", "spec.containers[0]"),
    ]
    assert compiled.annotations[NRI_MEMORY_MIN_PREFIX + "migrate"] == str(2 * GI)
    assert compiled.annotations[NRI_MEMORY_MIN_PREFIX + "proxy"] == str(100 * MI)


def test_sidecar_started_after_a_plain_init_container_does_not_raise_its_peak() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=gold"}, [ctr("app", "1Gi")],
                               init=[ctr("migrate", "2Gi"), ctr("proxy", "100Mi", restartPolicy="Always")]),
                           DEFAULT_CATALOG)
    assert compiled.memory_min == 2 * GI


# --- pods without requests ------------------------------------------------------------------------------


def test_pod_without_requests_gets_no_annotations() -> None:
    compiled = compile_pod(pod(), DEFAULT_CATALOG)
    assert not compiled.has_requests
    assert compiled.annotations == {}
    assert compiled.labels == {}
    assert compiled.memory_min == 0


@pytest.mark.parametrize("catalog", [KOORDINATOR, KUBELET])
def test_pod_without_requests_gets_no_annotations_under_any_backend(catalog: Catalog) -> None:
    compiled = compile_pod(pod(), catalog)
    assert compiled.annotations == {}
    assert compiled.labels == {}


# --- kubelet accounting ---------------------------------------------------------------------------------


def test_kubelet_accounting_counts_the_full_request_whatever_the_class() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=bronze"}, [ctr("a", "1Gi", "2Gi"), ctr("b", "256Mi")]),
                           KUBELET)
    assert compiled.memory_min == GI + 256 * MI
    assert [p.memory_min for p in compiled.containers] == [GI, 256 * MI]
    assert all(p.memory_high is None for p in compiled.containers)


def test_kubelet_backend_writes_only_the_canonical_annotations() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=gold"}), KUBELET)
    assert set(compiled.annotations) == {MEMORY_MIN, RESOLVED}
    assert compiled.annotations[MEMORY_MIN] == str(GI)
    assert compiled.labels == {}


def test_kubelet_accounting_counts_requests_of_pods_asking_only_for_other_resources() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "example.com/blockio=slow"}), KUBELET)
    assert compiled.annotations[MEMORY_MIN] == str(GI)


def test_kubelet_accounting_pod_figure_without_any_request_is_the_pod_requests() -> None:
    assert compile_pod(pod(), KUBELET).memory_min == GI


# --- koordinator ----------------------------------------------------------------------------------------


def test_koordinator_writes_the_qos_label_and_memory_qos_policy() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=gold"}), KOORDINATOR)
    assert compiled.labels == {KOORD_QOS_CLASS_LABEL: "LSR"}
    assert orjson.loads(compiled.annotations[KOORD_MEMORY_QOS]) == {"policy": "auto", "minLimitPercent": 100,
                                                                     "throttlingPercent": 0}
    assert compiled.annotations[MEMORY_MIN] == str(GI)
    assert not any(key.startswith((NRI_CLASS_PREFIX, NRI_MEMORY_MIN_PREFIX, NRI_MEMORY_HIGH_PREFIX))
                   for key in compiled.annotations)


def test_koordinator_denies_containers_resolving_to_different_classes() -> None:
    error = denial(pod({CARRIER_POD: "memory-qos=gold", CARRIER_CONTAINER_PREFIX + "b": "memory-qos=silver"},
                       [ctr("a", "1Gi"), ctr("b", "1Gi")]), KOORDINATOR)
    assert "one memory class per pod" in str(error)
    assert "gold, silver" in str(error)


# --- other resources and errors -------------------------------------------------------------------------


def test_resource_without_memory_semantics_is_resolved_but_writes_no_backend_annotation() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "example.com/blockio=slow"}), WITH_BLOCKIO)
    assert compiled.annotations == {MEMORY_MIN: "0", RESOLVED: '{"app":{"example.com/blockio":"slow"}}'}


def test_unknown_pod_level_class_lists_the_allowed_ones_once() -> None:
    error = denial(pod({CARRIER_POD: "memory-qos=platinum"}, [ctr("a"), ctr("b"), ctr("c")]))
    assert len(error.errors) == 1
    assert error.errors[0].path == f"pod qosResources (or annotation {CARRIER_POD})"
    assert error.errors[0].message == "unknown class 'platinum' for memory-qos (allowed: gold, silver, bronze)"


def test_unknown_container_level_class_names_the_container() -> None:
    error = denial(pod({CARRIER_CONTAINER_PREFIX + "b": "memory-qos=platinum"}, [ctr("a"), ctr("b")]))
    assert error.errors[0].path == f"spec.containers[1] (qosResources or annotation {CARRIER_CONTAINER_PREFIX}b)"


def test_unknown_resource_lists_the_known_ones() -> None:
    error = denial(pod({CARRIER_POD: "cpu-qos=gold"}), WITH_BLOCKIO)
    assert "unknown QoS resource 'cpu-qos' (known: memory-qos, example.com/blockio)" in str(error)


def test_every_problem_of_a_pod_is_reported_at_once() -> None:
    error = denial(pod({CARRIER_CONTAINER_PREFIX + "b": "memory-qos=platinum"},
                       [ctr("a", "1Mb"), ctr("b", "1Gi")], init=[ctr("i", limit="-1")]))
    assert [e.path for e in error.errors] == [
        "spec.initContainers[0].resources.limits.memory",
        "spec.containers[0].resources.requests.memory",
        f"spec.containers[1] (qosResources or annotation {CARRIER_CONTAINER_PREFIX}b)",
    ]


def test_carrier_errors_surface_from_compile() -> None:
    with pytest.raises(InvalidError, match="not of the form name=class"):
        compile_pod(pod({CARRIER_POD: "gold"}), DEFAULT_CATALOG)


def test_resolved_summary_is_sorted_json_per_container() -> None:
    compiled = compile_pod(pod({CARRIER_POD: "memory-qos=gold"}, [ctr("z"), ctr("a")]), DEFAULT_CATALOG)
    assert resolved_summary(compiled.requests, list(compiled.containers)) == \
        '{"a":{"memory-qos":"gold"},"z":{"memory-qos":"gold"}}'


def test_memoised_compilation_follows_a_catalog_swap():
    pod = {"metadata": {"annotations": {CARRIER_POD: "memory-qos=gold"}},
           "spec": {"containers": [{"name": "app", "resources": {"requests": {"memory": "1Gi"}}}]}}
    assert compile_pod(pod, DEFAULT_CATALOG).memory_min == GI
    halved = load_catalog_yaml("resources: [{name: memory-qos, classes: [{name: gold, memoryMinPercent: 50}]}]")
    assert compile_pod(pod, halved).memory_min == GI // 2
    assert compile_pod(pod, DEFAULT_CATALOG).memory_min == GI


def test_memoised_compilation_sees_every_input_it_reads():
    base = {"metadata": {"annotations": {CARRIER_POD: "memory-qos=gold", "team": "a"}},
            "spec": {"containers": [{"name": "app", "resources": {"requests": {"memory": "1Gi"}}}]}}
    first = compile_pod(base, DEFAULT_CATALOG)
    unrelated = {**base, "metadata": {"annotations": {CARRIER_POD: "memory-qos=gold", "team": "b"}}}
    assert compile_pod(unrelated, DEFAULT_CATALOG) is first  # same shape: served from the memo
    silver = {**base, "metadata": {"annotations": {CARRIER_POD: "memory-qos=silver"}}}
    assert compile_pod(silver, DEFAULT_CATALOG).memory_min == GI // 2
    bigger = {**base, "spec": {"containers": [{"name": "app", "resources": {"requests": {"memory": "2Gi"}}}]}}
    assert compile_pod(bigger, DEFAULT_CATALOG).memory_min == 2 * GI
    sidecar = {**base, "spec": {"initContainers": [{"name": "app", "restartPolicy": "Always",
                                                     "resources": {"requests": {"memory": "1Gi"}}}],
                                "containers": [{"name": "main", "resources": {"requests": {"memory": "1Gi"}}}]}}
    assert compile_pod(sidecar, DEFAULT_CATALOG).memory_min == 2 * GI


def test_invalid_pods_are_reported_every_time_not_memoised():
    pod = {"metadata": {"annotations": {CARRIER_POD: "memory-qos=tin"}},
           "spec": {"containers": [{"name": "app", "resources": {"requests": {"memory": "1Gi"}}}]}}
    for _ in range(2):
        with pytest.raises(InvalidError, match="tin"):
            compile_pod(pod, DEFAULT_CATALOG)
