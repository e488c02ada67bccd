from __future__ import annotations

import base64
import copy
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from qosgate.core import compile as compile_module
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
    is_carrier_annotation,
    is_owned_annotation,
)
from qosgate.core.catalog import DEFAULT_CATALOG, Catalog, load_catalog_yaml
from qosgate.core.compile import compile_pod
from qosgate.webhook import mutate as mutate_module
from qosgate.webhook.admission import API_VERSION, KIND, AdmissionResponse, decode_review, encode_response
from qosgate.webhook.mutate import mutate, mutate_pod

GI = 2**30
KOORDINATOR = load_catalog_yaml("""\
backends: [nri-memory-qos, koordinator]
resources:
- name: memory-qos
  classes:
  - {name: gold, memoryMinPercent: 100, koordinatorQoSClass: LSR}
  - {name: silver, memoryMinPercent: 50, throttlePercent: 90}
  - {name: bronze, nriClass: bronze, koordinatorQoSClass: BE}
""")
KUBELET = load_catalog_yaml("""\
backends: [kubelet]
resources:
- name: memory-qos
  classes: [{name: gold, memoryMinPercent: 100}, {name: silver, memoryMinPercent: 50}, {name: bronze}]
""")


def ctr(name: str = "app", request: str | None = "1Gi", limit: str | None = "2Gi", **extra: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if request is not None:
        resources["requests"] = {"memory": request}
    if limit is not None:
        resources["limits"] = {"memory": limit}
    return {"name": name, "image": "nginx", "resources": resources, **extra}


def pod(annotations: dict[str, str] | None = None, containers: list[dict[str, Any]] | None = None,
        labels: dict[str, str] | None = None, name: str = "web-1") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "team-a"}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": containers or [ctr()]}}


def mutated(pod_object: dict[str, Any], catalog: Catalog = DEFAULT_CATALOG) -> tuple[dict[str, Any], AdmissionResponse]:
    """Mutate, then apply the returned patch with a real JSON-patch library, as kube-apiserver does."""
    response = mutate_pod(pod_object, catalog)
    assert response.allowed, response.message
    result = jsonpatch.JsonPatch(list(response.patch)).apply(copy.deepcopy(pod_object))
    return result, response


def annotations_of(pod_object: dict[str, Any]) -> dict[str, str]:
    return pod_object["metadata"].get("annotations") or {}


def assert_idempotent(pod_object: dict[str, Any], catalog: Catalog) -> None:
    again = mutate_pod(pod_object, catalog)
    assert again.allowed
    assert list(again.patch) == []
    assert again.warnings == []


def review_body(pod_object: dict[str, Any] | None, operation: str = "CREATE", kind: str = "Pod",
                sub_resource: str | None = None, name: str = "") -> bytes:
    request: dict[str, Any] = {"uid": "uid-1", "kind": {"group": "", "version": "v1", "kind": kind},
                               "resource": {"group": "", "version": "v1", "resource": kind.lower() + "s"},
                               "name": name, "namespace": "team-a", "operation": operation,
                               "userInfo": {"username": "alice"}, "object": pod_object,
                               "oldObject": pod_object if operation == "UPDATE" else None}
    if sub_resource:
        request["subResource"] = sub_resource
    return orjson.dumps({"apiVersion": API_VERSION, "kind": KIND, "request": request})


# --- what gets written ----------------------------------------------------------------------------------


def test_gold_pod_gets_canonical_memory_min_and_nri_annotations() -> None:
    result, response = mutated(pod({CARRIER_POD: "memory-qos=gold", "team": "a"}))
    assert annotations_of(result) == {
        CARRIER_POD: "memory-qos=gold",
        "team": "a",
        MEMORY_MIN: str(GI),
        RESOLVED: '{"app":{"memory-qos":"gold"}}',
        NRI_MEMORY_MIN_PREFIX + "app": str(GI),
    }
    assert response.warnings == []


def test_silver_pod_gets_memory_high() -> None:
    result, _ = mutated(pod({CARRIER_POD: "memory-qos=silver"}))
    assert annotations_of(result)[NRI_MEMORY_HIGH_PREFIX + "app"] == str(498073 * 4096)
    assert annotations_of(result)[MEMORY_MIN] == str(GI // 2)


def test_pod_without_an_annotations_map_gets_one_added_whole() -> None:
    native = pod(None)
    native["spec"]["qosResources"] = [{"name": "memory-qos", "class": "gold"}]
    result, response = mutated(native)
    assert [op["path"] for op in response.patch] == ["/metadata/annotations"]
    assert annotations_of(result)[MEMORY_MIN] == str(GI)


def test_koordinator_backend_adds_label_and_memory_qos() -> None:
    result, _ = mutated(pod({CARRIER_POD: "memory-qos=gold"}), KOORDINATOR)
    assert result["metadata"]["labels"] == {KOORD_QOS_CLASS_LABEL: "LSR"}
    assert orjson.loads(annotations_of(result)[KOORD_MEMORY_QOS])["minLimitPercent"] == 100
    assert annotations_of(result)[NRI_MEMORY_MIN_PREFIX + "app"] == str(GI)


def test_koordinator_label_is_added_next_to_existing_labels() -> None:
    result, _ = mutated(pod({CARRIER_POD: "memory-qos=bronze"}, labels={"app": "web"}), KOORDINATOR)
    assert result["metadata"]["labels"] == {"app": "web", KOORD_QOS_CLASS_LABEL: "BE"}


def test_kubelet_backend_writes_only_the_canonical_annotations() -> None:
    result, _ = mutated(pod({CARRIER_POD: "memory-qos=bronze"}), KUBELET)
    assert set(annotations_of(result)) == {CARRIER_POD, MEMORY_MIN, RESOLVED}
    assert annotations_of(result)[MEMORY_MIN] == str(GI)


# --- untrusted owned annotations ------------------------------------------------------------------------


def test_user_written_owned_annotations_are_overwritten_and_removed_with_a_warning() -> None:
    tampered = {CARRIER_POD: "memory-qos=gold", MEMORY_MIN: "1", NRI_MEMORY_HIGH_PREFIX + "app": "4096",
                NRI_CLASS_PREFIX + "app": "bronze", "qosgate.io/anything": "x", "team": "a"}
    result, response = mutated(pod(tampered))
    assert annotations_of(result) == {
        CARRIER_POD: "memory-qos=gold",
        "team": "a",
        MEMORY_MIN: str(GI),
        RESOLVED: '{"app":{"memory-qos":"gold"}}',
        NRI_MEMORY_MIN_PREFIX + "app": str(GI),
    }
    assert len(response.warnings) == 1
    warning = response.warnings[0]
    assert warning.startswith("qosgate replaced annotations only it may set: ")
    for key in (MEMORY_MIN, NRI_MEMORY_HIGH_PREFIX + "app", NRI_CLASS_PREFIX + "app", "qosgate.io/anything"):
        assert key in warning


def test_owned_annotation_already_equal_to_the_computation_is_not_reported() -> None:
    result, response = mutated(pod({CARRIER_POD: "memory-qos=gold", MEMORY_MIN: str(GI)}))
    assert response.warnings == []
    assert annotations_of(result)[MEMORY_MIN] == str(GI)


def test_user_set_koordinator_label_is_replaced_for_a_pod_with_a_class() -> None:
    result, _ = mutated(pod({CARRIER_POD: "memory-qos=bronze"}, labels={KOORD_QOS_CLASS_LABEL: "LSE"}), KOORDINATOR)
    assert result["metadata"]["labels"] == {KOORD_QOS_CLASS_LABEL: "BE"}


def test_koordinator_label_on_a_pod_without_classes_is_left_to_the_user() -> None:
    # The label is plain koordinator usage; qosgate owns it only for pods that asked for a class.
    response = mutate_pod(pod(labels={KOORD_QOS_CLASS_LABEL: "LS"}), KOORDINATOR)
    assert response.allowed
    assert list(response.patch) == []


# --- pods that ask for nothing --------------------------------------------------------------------------


@pytest.mark.parametrize("catalog", [DEFAULT_CATALOG, KOORDINATOR, KUBELET])
def test_pod_without_requests_or_owned_annotations_is_allowed_without_patch(catalog: Catalog) -> None:
    for plain in (pod(), pod({"team": "a"}), pod({"team": "a"}, labels={"app": "web"})):
        response = mutate_pod(plain, catalog)
        assert response.allowed
        assert list(response.patch) == []
        assert response.warnings == []


def test_pod_without_requests_loses_user_set_backend_annotations() -> None:
    sneaky = {"team": "a", MEMORY_MIN: "0", NRI_MEMORY_MIN_PREFIX + "app": str(GI), NRI_CLASS_PREFIX + "app": "gold",
              KOORD_MEMORY_QOS: '{"policy":"auto","minLimitPercent":100}'}
    result, response = mutated(pod(sneaky), KOORDINATOR)
    assert annotations_of(result) == {"team": "a"}
    assert all(op["op"] == "remove" for op in response.patch)
    assert "qosgate replaced annotations only it may set" in response.warnings[0]


# --- idempotency ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("catalog", [DEFAULT_CATALOG, KOORDINATOR, KUBELET])
@pytest.mark.parametrize("annotations", [
    {CARRIER_POD: "memory-qos=gold"},
    {CARRIER_POD: "memory-qos=silver", MEMORY_MIN: "3", "qosgate.io/x": "y"},
    {CARRIER_POD: "memory-qos=bronze", CARRIER_CONTAINER_PREFIX + "app": "memory-qos=bronze"},
    {NRI_MEMORY_MIN_PREFIX + "app": "1"},
])
def test_mutating_the_patched_pod_yields_no_ops(catalog: Catalog, annotations: dict[str, str]) -> None:
    result, _ = mutated(pod(annotations), catalog)
    assert_idempotent(result, catalog)


# --- through the AdmissionReview codec ------------------------------------------------------------------


def test_create_through_the_codec_returns_a_patch_the_apiserver_can_apply() -> None:
    gold = pod({CARRIER_POD: "memory-qos=gold"}, name="")
    gold["metadata"]["generateName"] = "web-"
    request = decode_review(review_body(gold, name=""))
    body = orjson.loads(encode_response(request.uid, mutate(request, DEFAULT_CATALOG)))["response"]
    assert body["uid"] == "uid-1"
    assert body["allowed"] is True
    ops = orjson.loads(base64.b64decode(body["patch"]))
    result = jsonpatch.JsonPatch(ops).apply(copy.deepcopy(gold))
    assert annotations_of(result)[MEMORY_MIN] == str(GI)


def update_body(new: dict[str, Any], old: dict[str, Any]) -> bytes:
    review = orjson.loads(review_body(new, "UPDATE", name="web-1"))
    review["request"]["oldObject"] = old
    return orjson.dumps(review)


def test_update_keeps_what_the_pod_was_admitted_with_and_reverts_tampering() -> None:
    admitted, _ = mutated(pod({CARRIER_POD: "memory-qos=silver"}))
    tampered = copy.deepcopy(admitted)
    tampered["metadata"]["annotations"][MEMORY_MIN] = "1"
    response = mutate(decode_review(update_body(tampered, admitted)), DEFAULT_CATALOG)
    assert response.allowed and response.warnings
    patched = jsonpatch.apply_patch(tampered, list(response.patch))
    assert annotations_of(patched) == annotations_of(admitted)


def test_update_does_not_consult_the_catalog_after_an_edit() -> None:
    """Issue 10 finding 4: after gold changed 100 % → 80 % and silver was removed, UPDATEs of running pods were
    recomputed from the new catalog (and then refused). The pod keeps what it was admitted with."""
    edited = load_catalog_yaml("resources:\n- name: memory-qos\n  classes:\n  - {name: gold, memoryMinPercent: 80}\n",
                               "edited")
    for klass in ("gold", "silver"):
        admitted, _ = mutated(pod({CARRIER_POD: f"memory-qos={klass}"}))
        relabelled = copy.deepcopy(admitted)
        relabelled["metadata"].setdefault("labels", {})["team"] = "b"
        relabelled["metadata"]["finalizers"] = []
        response = mutate(decode_review(update_body(relabelled, admitted)), edited)
        assert response.allowed and list(response.patch) == [] and not response.warnings


@pytest.mark.parametrize("kind", ["Deployment", "ConfigMap", "Pods"])
def test_non_pod_kinds_are_allowed_untouched(kind: str) -> None:
    response = mutate(decode_review(review_body(pod({CARRIER_POD: "memory-qos=gold"}), kind=kind)), DEFAULT_CATALOG)
    assert response.allowed
    assert list(response.patch) == []


@pytest.mark.parametrize("sub_resource", ["status", "ephemeralcontainers", "binding"])
def test_pod_subresources_are_allowed_untouched(sub_resource: str) -> None:
    body = review_body(pod({CARRIER_POD: "memory-qos=gold"}), "UPDATE", sub_resource=sub_resource, name="web-1")
    response = mutate(decode_review(body), DEFAULT_CATALOG)
    assert response.allowed
    assert list(response.patch) == []


def test_delete_without_an_object_is_allowed_untouched() -> None:
    response = mutate(decode_review(review_body(None, "DELETE", name="web-1")), DEFAULT_CATALOG)
    assert response.allowed
    assert list(response.patch) == []


# --- denials name the field -----------------------------------------------------------------------------


@pytest.mark.parametrize(("the_pod", "fragment"), [
    (pod({CARRIER_POD: "memory-qos=platinum"}),
     "unknown class 'platinum' for memory-qos (allowed: gold, silver, bronze)"),
    (pod({CARRIER_POD: "memory-qos=gold"}, [ctr(request="1Mb")]), "spec.containers[0].resources.requests.memory"),
    (pod({CARRIER_POD: "memory-qos=bronze"}, [ctr(limit=None)]), "spec.containers[0].resources.limits.memory"),
    (pod({CARRIER_CONTAINER_PREFIX + "db": "memory-qos=gold"}),
     f"metadata.annotations[{CARRIER_CONTAINER_PREFIX}db]: names container 'db'"),
    (pod({CARRIER_POD: "memory-qos"}), f"metadata.annotations[{CARRIER_POD}]: 'memory-qos' is not of the form"),
])
def test_denial_message_names_the_field(the_pod: dict[str, Any], fragment: str) -> None:
    response = mutate_pod(the_pod, DEFAULT_CATALOG)
    assert not response.allowed
    assert response.code == 403
    assert response.message.startswith("qosgate: ")
    assert fragment in response.message
    assert list(response.patch) == []


def test_pod_without_requests_but_a_bad_memory_quantity_is_denied() -> None:
    # The quantity is parsed for every pod; the apiserver would reject it anyway.
    response = mutate_pod(pod(containers=[ctr(request="-1")]), DEFAULT_CATALOG)
    assert not response.allowed
    assert "spec.containers[0].resources.requests.memory" in response.message


def test_koordinator_mixed_classes_are_denied() -> None:
    response = mutate_pod(pod({CARRIER_POD: "memory-qos=gold", CARRIER_CONTAINER_PREFIX + "db": "memory-qos=silver"},
                              [ctr("web"), ctr("db")]), KOORDINATOR)
    assert not response.allowed
    assert "one memory class per pod" in response.message


def test_metadata_that_is_not_an_object_is_a_bad_request() -> None:
    broken = pod()
    broken["metadata"] = "web"
    response = mutate_pod(broken, DEFAULT_CATALOG)
    assert (response.allowed, response.code, response.reason) == (False, 400, "BadRequest")
    assert "metadata: must be an object" in response.message


def test_annotations_that_are_not_a_map_are_denied_naming_the_field() -> None:
    broken = pod()
    broken["metadata"]["annotations"] = ["memory-qos=gold"]
    response = mutate_pod(broken, DEFAULT_CATALOG)
    assert not response.allowed
    assert "metadata.annotations" in response.message


# --- property: mutation is idempotent for any pod -------------------------------------------------------

CONTAINER_NAMES = ["app", "db", "side"]
QUANTITIES = st.sampled_from([None, "0", "100m", "64Mi", "1Gi", "1.5Gi", "2Gi", "129e6"])
CLASSES = st.sampled_from(["gold", "silver", "bronze"])
OWNED_KEYS = st.sampled_from([MEMORY_MIN, RESOLVED, "qosgate.io/other", NRI_CLASS_PREFIX + "app",
                              NRI_MEMORY_MIN_PREFIX + "db", NRI_MEMORY_HIGH_PREFIX + "side", KOORD_MEMORY_QOS])


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(CONTAINER_NAMES), min_size=1, max_size=3, unique=True))
    containers = [ctr(n, draw(QUANTITIES), draw(QUANTITIES)) for n in names]
    init = []
    if draw(st.booleans()):
        init.append(ctr("init", draw(QUANTITIES), draw(QUANTITIES),
                        **({"restartPolicy": "Always"} if draw(st.booleans()) else {})))
    annotations: dict[str, str] | None = draw(st.one_of(st.none(), st.just({"team": "a"})))
    if draw(st.booleans()):
        annotations = {**(annotations or {}), CARRIER_POD: f"memory-qos={draw(CLASSES)}"}
    for n in names:
        if draw(st.booleans()):
            annotations = {**(annotations or {}), CARRIER_CONTAINER_PREFIX + n: f"memory-qos={draw(CLASSES)}"}
    tampered = draw(st.dictionaries(OWNED_KEYS, st.sampled_from(["", "1", "1073741824", "bronze"]), max_size=3))
    if tampered:
        annotations = {**(annotations or {}), **tampered}
    labels = draw(st.one_of(st.none(), st.just({"app": "x"}), st.just({KOORD_QOS_CLASS_LABEL: "LSE"})))
    result = pod(annotations, containers, labels=labels, name=draw(st.sampled_from(["", "web-1"])))
    if init:
        result["spec"]["initContainers"] = init
    return result


@settings(max_examples=150, deadline=None)
@given(pods(), st.sampled_from([DEFAULT_CATALOG, KOORDINATOR, KUBELET]))
def test_mutation_is_idempotent_for_any_pod(the_pod: dict[str, Any], catalog: Catalog) -> None:
    response = mutate_pod(the_pod, catalog)
    event("allowed" if response.allowed else "denied")
    if not response.allowed:
        assert response.message.startswith("qosgate: ")
        assert list(response.patch) == []
        return
    result = jsonpatch.JsonPatch(list(response.patch)).apply(copy.deepcopy(the_pod))
    assert_idempotent(result, catalog)
    # Foreign annotations and the carrier survive; the owned keys are exactly the computed ones.
    before, after = annotations_of(the_pod), annotations_of(result)
    for key in ("team", CARRIER_POD):
        if key in before:
            assert after[key] == before[key]
    assert {k: v for k, v in after.items() if is_owned_annotation(k)} == compile_pod(result, catalog).annotations
    assert result["spec"] == the_pod["spec"]


# --- property: a remembered answer is the answer -------------------------------------------------------

SECOND_SCHEDULER = load_catalog_yaml("""\
backends: [nri-memory-qos]
scheduling: {schedulerName: qosgate-scheduler, routeKubeletProtected: true}
resources:
- name: memory-qos
  classes: [{name: gold, memoryMinPercent: 100}, {name: silver, memoryMinPercent: 50}, {name: bronze}]
""")


def fresh_answer(the_pod: dict[str, Any], catalog: Catalog) -> AdmissionResponse:
    """The answer decided from scratch: both memos (the outcome's and compile's) emptied first."""
    mutate_module._OUTCOMES.clear()
    compile_module._COMPILED.clear()
    return mutate_pod(the_pod, catalog)


@st.composite
def routed_pods(draw: st.DrawFn) -> dict[str, Any]:
    """pods() plus what routing reads: schedulerName, overhead, status.qosClass."""
    result = draw(pods())
    scheduler = draw(st.sampled_from([None, "", "default-scheduler", "batch"]))
    if scheduler is not None:
        result["spec"]["schedulerName"] = scheduler
    if draw(st.booleans()):
        result["spec"]["overhead"] = {"memory": draw(st.sampled_from(["0", "64Mi"]))}
    if draw(st.booleans()):
        result["status"] = {"qosClass": draw(st.sampled_from(["Guaranteed", "Burstable", "BestEffort"]))}
    return result


def replica_of(the_pod: dict[str, Any], index: int) -> dict[str, Any]:
    """Another pod of the same workload: a different name, image and environment, nothing the answer reads."""
    replica = copy.deepcopy(the_pod)
    replica["metadata"]["name"] = f"web-{index}"
    if isinstance(replica["metadata"].get("labels"), dict):
        replica["metadata"]["labels"]["pod-template-hash"] = f"h{index}"
    for container in replica["spec"]["containers"]:
        container["image"] = f"web:{index}"
        container["env"] = [{"name": "REPLICA", "value": str(index)}]
    return replica


def _set_status_class(the_pod: dict[str, Any], value: str) -> None:
    the_pod["status"] = {"qosClass": value}


def _set_label(the_pod: dict[str, Any], value: str) -> None:
    the_pod["metadata"]["labels"] = {**(the_pod["metadata"].get("labels") or {}), KOORD_QOS_CLASS_LABEL: value}


def _set_annotation(key: str) -> Any:
    def apply(the_pod: dict[str, Any], value: str) -> None:
        the_pod["metadata"]["annotations"] = {**(the_pod["metadata"].get("annotations") or {}), key: value}
    return apply


def _set_scheduler(the_pod: dict[str, Any], value: str) -> None:
    the_pod["spec"]["schedulerName"] = value


def _set_overhead(the_pod: dict[str, Any], value: str) -> None:
    current = (the_pod["spec"].get("overhead") or {}).get("memory")
    the_pod["spec"]["overhead"] = {"memory": value if value != current else "32Mi"}


def _set_request(the_pod: dict[str, Any], value: str) -> None:
    container = the_pod["spec"]["containers"][0]
    current = (container.get("resources") or {}).get("requests", {}).get("memory")
    container["resources"] = {"requests": {"memory": value if value != current else "3Gi"},
                              "limits": {"memory": "4Gi"}}


def _toggle_annotation_map(the_pod: dict[str, Any], _value: str) -> None:
    """Absent and empty annotations are patched differently (the map is added whole, or key by key)."""
    the_pod["metadata"]["annotations"] = {} if the_pod["metadata"].get("annotations") is None else None


def _drop_classes(the_pod: dict[str, Any]) -> None:
    annotations = the_pod["metadata"].get("annotations")
    if annotations:
        the_pod["metadata"]["annotations"] = {k: v for k, v in annotations.items() if not is_carrier_annotation(k)}


# One field the answer reads, changed, with values that matter to it: the memo must tell the pods apart.
PERTURBATIONS: dict[str, tuple[Any, list[str]]] = {
    "status.qosClass": (_set_status_class, ["Guaranteed", "Burstable", "BestEffort"]),
    "owned label": (_set_label, ["LSE", "LSR", "BE"]),
    "pod carrier": (_set_annotation(CARRIER_POD), ["memory-qos=gold", "memory-qos=bronze"]),
    "container carrier": (_set_annotation(CARRIER_CONTAINER_PREFIX + "app"), ["memory-qos=gold", "memory-qos=bronze"]),
    "owned annotation": (_set_annotation(MEMORY_MIN), ["1", "1073741824"]),
    "schedulerName": (_set_scheduler, ["", "default-scheduler", "batch"]),
    "overhead": (_set_overhead, ["0", "64Mi"]),
    "annotation map": (_toggle_annotation_map, [""]),
    "memory request": (_set_request, ["1Gi", "2Gi"]),
}


@settings(max_examples=500, deadline=None)
@given(routed_pods(), st.sampled_from(["unrelated pod", "replica", *PERTURBATIONS]), st.booleans(),
       st.sampled_from([DEFAULT_CATALOG, KOORDINATOR, KUBELET, SECOND_SCHEDULER, SECOND_SCHEDULER]), st.data())
def test_an_answer_served_from_memory_equals_the_answer_decided_afresh(
        first: dict[str, Any], how: str, classless: bool, catalog: Catalog, data: st.DataObject) -> None:
    """The second pod is unrelated, a replica of the first, or a replica with one field the answer reads
    changed (from a first pod that asks for no class, sometimes: the routing rules only apply to those)."""
    if classless:
        _drop_classes(first)
    if how == "unrelated pod":
        second = data.draw(routed_pods())
    else:
        second = replica_of(first, 2)
        if how != "replica":
            change, values = PERTURBATIONS[how]
            change(second, data.draw(st.sampled_from(values)))
    fresh_answer(first, catalog)  # leaves its outcome (and compile result) remembered
    served = mutate_pod(second, catalog)
    expected = fresh_answer(second, catalog)
    event(how)
    assert (served.allowed, list(served.patch), served.warnings, served.message) == \
        (expected.allowed, list(expected.patch), expected.warnings, expected.message)


def test_overhead_alone_routes_a_guaranteed_pod_without_requests_even_after_a_twin_without_it() -> None:
    """spec.overhead is all that gives this pod protected memory: the memo must not answer it from its twin."""
    twin = pod(None, [ctr("app", None, None)])
    twin["status"] = {"qosClass": "Guaranteed"}
    with_overhead = copy.deepcopy(twin)
    with_overhead["spec"]["overhead"] = {"memory": "64Mi"}
    assert fresh_answer(twin, SECOND_SCHEDULER).patch == []
    assert mutate_pod(with_overhead, SECOND_SCHEDULER).patch == [
        {"op": "add", "path": "/spec/schedulerName", "value": "qosgate-scheduler"}]


def test_replicas_of_one_workload_share_one_decision() -> None:
    first = pod({CARRIER_POD: "memory-qos=gold"}, [ctr("app", "1Gi", "2Gi")], name="web-1")
    fresh_answer(first, DEFAULT_CATALOG)
    assert mutate_pod(replica_of(first, 2), DEFAULT_CATALOG) is mutate_pod(first, DEFAULT_CATALOG)


def test_a_catalog_edit_is_never_answered_from_memory() -> None:
    first = pod({CARRIER_POD: "memory-qos=silver"}, [ctr("app", "1Gi", "2Gi")])
    before = mutate_pod(first, DEFAULT_CATALOG)
    after = mutate_pod(first, KOORDINATOR)
    assert after is not before
    assert after.patch != before.patch
