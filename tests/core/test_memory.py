from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.core.errors import InvalidError
from qosgate.core.memory import (
    PAGE_SIZE,
    ContainerMemory,
    InitContainerAmount,
    container_memory,
    container_memory_high,
    container_memory_min,
    is_sidecar,
    pod_requests_memory,
    pod_total,
)

GI = 2**30
FAST = settings(max_examples=200, deadline=None)


def init(amount: int) -> InitContainerAmount:
    return InitContainerAmount(amount, restartable=False)


def sidecar(amount: int) -> InitContainerAmount:
    return InitContainerAmount(amount, restartable=True)


def ctr(request: str | None = None, limit: str | None = None, **extra: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if request is not None:
        resources["requests"] = {"memory": request}
    if limit is not None:
        resources["limits"] = {"memory": limit}
    return {"name": "c", "resources": resources, **extra}


# --- memory.min -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("request_bytes", "percent", "expected"),
                         [(1000, 50, 500), (1001, 50, 500), (999, 33, 329), (GI, 100, GI), (GI, 0, 0), (0, 100, 0)])
def test_memory_min_is_the_floor_of_request_times_percent(request_bytes: int, percent: int, expected: int) -> None:
    assert container_memory_min(request_bytes, percent) == expected


# --- memory.high ----------------------------------------------------------------------------------------


def test_memory_high_follows_the_kep_2570_formula_page_aligned() -> None:
    # 1Gi + 0.9 × (2Gi − 1Gi) = 2040109465.6 → floor to a 4096-byte page = 498073 pages.
    assert container_memory_high(GI, 2 * GI, 90, GI // 2) == 498073 * 4096


def test_memory_high_is_rounded_down_to_a_page() -> None:
    # 0 + 0.5 × 10000 = 5000 bytes → one page.
    assert container_memory_high(0, 10_000, 50, 0) == 4096


def test_memory_high_with_full_throttle_is_the_page_aligned_limit() -> None:
    assert container_memory_high(GI, 2 * GI + 100, 100, 0) == 2 * GI


def test_memory_high_is_not_set_without_a_limit() -> None:
    assert container_memory_high(GI, None, 90, 0) is None


def test_memory_high_is_not_set_when_request_equals_limit() -> None:
    assert container_memory_high(GI, GI, 90, 0) is None


def test_memory_high_is_not_set_when_the_limit_is_below_the_request() -> None:
    assert container_memory_high(2 * GI, GI, 90, 0) is None


def test_memory_high_is_not_set_for_throttle_zero() -> None:
    assert container_memory_high(GI, 2 * GI, 0, 0) is None


def test_memory_high_is_not_set_when_it_would_not_exceed_memory_min() -> None:
    # req + 0.5 × 100 bytes rounds down to req, which is the protected floor itself.
    request = 10 * PAGE_SIZE
    assert container_memory_high(request, request + 100, 50, request) is None


def test_memory_high_just_above_memory_min_is_set() -> None:
    request = 10 * PAGE_SIZE
    assert container_memory_high(request, request + 2 * PAGE_SIZE, 50, request - 1) == 11 * PAGE_SIZE


# --- pod total: Kubernetes PodRequests shape ------------------------------------------------------------


def test_pod_total_of_nothing_is_zero() -> None:
    assert pod_total([], []) == 0


def test_pod_total_sums_app_containers() -> None:
    assert pod_total([100, 200], []) == 300


def test_plain_init_container_larger_than_the_apps_sets_the_total() -> None:
    assert pod_total([100], [init(500)]) == 500


def test_plain_init_container_smaller_than_the_apps_does_not_count() -> None:
    assert pod_total([100], [init(50), init(99)]) == 100


def test_sidecar_started_before_a_plain_init_container_adds_to_its_peak() -> None:
    # apps + sidecar = 200 + 100 = 300; init peak = 300 + sidecar 100 = 400.
    assert pod_total([200], [sidecar(100), init(300)]) == 400


def test_sidecar_started_after_a_plain_init_container_does_not_add_to_its_peak() -> None:
    # apps + sidecar = 300; init peak = 300 alone (the sidecar is not running yet).
    assert pod_total([200], [init(300), sidecar(100)]) == 300


def test_sidecars_around_a_plain_init_container_only_the_earlier_ones_count() -> None:
    # apps + sidecars = 100 + 50 + 70 = 220; peaks: 50, 500 + 50 = 550, 50 + 70 = 120.
    assert pod_total([100], [sidecar(50), init(500), sidecar(70)]) == 550


def test_sidecars_alone_add_to_the_app_sum() -> None:
    # apps + sidecars = 50 + 100 + 200 = 350; peaks 100, 300.
    assert pod_total([50], [sidecar(100), sidecar(200)]) == 350


def test_pod_with_only_init_containers_is_the_init_peak() -> None:
    assert pod_total([], [init(10), sidecar(5), init(7)]) == 12


# --- reading requests and limits ------------------------------------------------------------------------


def test_container_memory_reads_request_and_limit_in_bytes() -> None:
    assert container_memory(ctr("1Gi", "2Gi"), "spec.containers[0]") == ContainerMemory(GI, 2 * GI)


def test_missing_request_defaults_to_the_limit() -> None:
    assert container_memory(ctr(limit="512Mi"), "spec.containers[0]") == ContainerMemory(512 * 2**20, 512 * 2**20)


def test_container_without_memory_resources_has_zero_request_and_no_limit() -> None:
    assert container_memory({"name": "c"}, "spec.containers[0]") == ContainerMemory(0, None)
    assert container_memory({"name": "c", "resources": {"requests": {"cpu": "1"}}}, "x") == ContainerMemory(0, None)


@pytest.mark.parametrize(("container", "path"), [
    (ctr("-1Gi"), "spec.containers[2].resources.requests.memory"),
    (ctr("1Gi", "lots"), "spec.containers[2].resources.limits.memory"),
])
def test_bad_memory_quantity_names_its_field(container: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidError) as info:
        container_memory(container, "spec.containers[2]")
    assert info.value.errors[0].path == path


def test_sidecar_is_an_init_container_with_restart_policy_always() -> None:
    assert is_sidecar({"restartPolicy": "Always"})
    assert not is_sidecar({"restartPolicy": "OnFailure"})
    assert not is_sidecar({})


def test_pod_requests_memory_uses_the_pod_requests_shape_over_the_spec() -> None:
    spec = {
        "initContainers": [ctr("100Mi", restartPolicy="Always"), ctr(limit="1Gi"), ctr("50Mi", restartPolicy="Always")],
        "containers": [ctr("200Mi"), ctr()],
    }
    # apps + sidecars = 200 + 100 + 50 = 350Mi; plain init peak = 1024 (request from limit) + 100 = 1124Mi.
    assert pod_requests_memory(spec) == 1124 * 2**20


def test_pod_requests_memory_error_names_the_init_container_index() -> None:
    spec = {"initContainers": [ctr("1Mi"), ctr("1Mb")], "containers": [ctr("1Mi")]}
    with pytest.raises(InvalidError) as info:
        pod_requests_memory(spec)
    assert info.value.errors[0].path == "spec.initContainers[1].resources.requests.memory"


# --- properties -----------------------------------------------------------------------------------------

BYTES = st.integers(min_value=0, max_value=2**50)
PERCENT = st.integers(min_value=0, max_value=100)


@FAST
@given(BYTES, PERCENT)
def test_memory_min_never_exceeds_the_request(request_bytes: int, percent: int) -> None:
    assert 0 <= container_memory_min(request_bytes, percent) <= request_bytes


@FAST
@given(request_bytes=BYTES, extra=st.one_of(st.none(), BYTES), throttle=PERCENT, percent=PERCENT)
def test_memory_high_when_set_is_page_aligned_above_memory_min_and_within_the_limit(
        request_bytes: int, extra: int | None, throttle: int, percent: int) -> None:
    limit = None if extra is None else request_bytes + extra
    memory_min = container_memory_min(request_bytes, percent)
    high = container_memory_high(request_bytes, limit, throttle, memory_min)
    if high is not None:
        assert limit is not None
        assert high % PAGE_SIZE == 0
        assert memory_min < high <= limit
    if limit is None or limit == request_bytes or throttle == 0:
        assert high is None


AMOUNTS = st.integers(min_value=0, max_value=2**40)


@FAST
@given(st.lists(AMOUNTS, max_size=5), st.lists(st.builds(InitContainerAmount, AMOUNTS, st.booleans()), max_size=5))
def test_pod_total_covers_every_app_and_every_init_container(app: list[int], inits: list[InitContainerAmount]) -> None:
    total = pod_total(app, inits)
    assert total >= sum(app)
    assert all(total >= amount for amount in app)
    assert all(total >= c.amount for c in inits)
    assert total >= sum(app) + sum(c.amount for c in inits if c.restartable)
