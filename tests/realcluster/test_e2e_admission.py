"""End to end on the real control plane: tenants create pods (official client, kubectl, server-side dry run) →
kube-apiserver's real admission chain calls qosgate's mutating and validating webhooks (3 replicas, configured
from manifests/base) → kube-scheduler (manifests/scheduler configuration) asks qosgate's extender to filter and
bind → the pod is bound with the annotations qosgate computed. Then what a tenant holding only `edit` may try,
a catalog edit under running class pods, and what kube-apiserver does with the native KEP-3008 fields.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.realcluster.conftest import NodePool
from tests.realcluster.controlplane import ControlPlane, Scheduler, wait_until
from tests.realcluster.helpers import (
    CATALOG_CONFIGMAP,
    MERGE,
    annotations,
    make_tenant,
    metric,
    put_catalog,
    warnings_of,
)
from tests.realcluster.qosgate_stack import CARRIER, MEMORY_MIN, QosgateStack, class_pod, quota_configmap

MI = 2**20
GI = 2**30
EXTENDER_REQUESTS = "qosgate_extender_requests_total"
OWNED_REPLACED = "qosgate replaced annotations only it may set"


@pytest.fixture(scope="module")
def scheduler(control_plane: ControlPlane, qosgate: QosgateStack) -> Iterator[Scheduler]:
    """kube-scheduler with manifests/scheduler/kube-scheduler-config.yaml (filter, prioritize, bind)."""
    with control_plane.start_scheduler(qosgate.scheduler_config()) as running:
        yield running


def extender_count(qosgate: QosgateStack, verb: str, outcome: str) -> float:
    return sum(metric(r.process.metrics(), EXTENDER_REQUESTS, verb=verb, outcome=outcome)
               for r in qosgate.extenders if r.process.running)


def test_class_pod_from_the_official_client_is_mutated_validated_and_bound_by_the_extender(
        control_plane: ControlPlane, qosgate: QosgateStack, scheduler: Scheduler, node_pool: NodePool) -> None:
    tenant = make_tenant(control_plane)
    # kube-scheduler's own scoring prefers the big node; only qosgate knows it protects nothing.
    decoy = node_pool.add(memory="256Gi", protectable="0")[0]
    fits = node_pool.add(memory="8Gi")[0]
    binds = extender_count(qosgate, "bind", "bound")

    created = tenant.core().create_namespaced_pod(
        tenant.namespace, node_pool.pin(class_pod("web", "gold", memory="256Mi", limit="512Mi")))
    notes = created.metadata.annotations
    assert notes[MEMORY_MIN] == str(256 * MI)
    assert notes["memory.min.memory-qos.nri.io/app"] == str(256 * MI)
    assert json.loads(notes["qosgate.io/resolved"]) == {"app": {"memory-qos": "gold"}}
    assert control_plane.wait_for_pod_bound(tenant.namespace, "web") == fits
    wait_until(lambda: extender_count(qosgate, "bind", "bound") >= binds + 1, 10, "the extender's bind metric")

    # The same scheduler puts a pod qosgate accounts nothing for on the node it prefers.
    tenant.core().create_namespaced_pod(tenant.namespace, node_pool.pin(class_pod("plain", None, memory="256Mi")))
    assert control_plane.wait_for_pod_bound(tenant.namespace, "plain") == decoy
    stored = control_plane.api.get(f"/api/v1/namespaces/{tenant.namespace}/pods/web").json()
    scheduled = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
    assert scheduled["PodScheduled"] == "True"


def test_kubectl_apply_and_server_side_dry_run_pass_both_webhooks(
        control_plane: ControlPlane, qosgate: QosgateStack, scheduler: Scheduler, node_pool: NodePool) -> None:
    tenant = make_tenant(control_plane)
    node = node_pool.add(memory="16Gi")[0]
    manifest = yaml.safe_dump(node_pool.pin(class_pod("api", "silver", memory="1Gi", limit="2Gi")))

    dry = control_plane.kubectl("-n", tenant.namespace, "apply", "--dry-run=server", "-o", "json", "-f", "-",
                                input=manifest, kubeconfig=tenant.kubeconfig)
    dry_notes = annotations(json.loads(dry.stdout))
    assert dry_notes[MEMORY_MIN] == str(512 * MI)  # silver: memoryMinPercent 50
    high = (GI + 9 * GI // 10) // 4096 * 4096     # throttlePercent 90 of the limit above the request
    assert dry_notes["memory.high.memory-qos.nri.io/app"] == str(high)
    assert control_plane.api.get(f"/api/v1/namespaces/{tenant.namespace}/pods/api").status_code == 404
    # A dry run never records a quota reservation (sideEffects: NoneOnDryRun is a promise).
    ledger = control_plane.api.get(f"/api/v1/namespaces/qosgate-system/configmaps/qosgate-quota-{tenant.namespace}")
    assert ledger.status_code == 404 or not ledger.json().get("data")

    applied = control_plane.kubectl("-n", tenant.namespace, "apply", "-f", "-", input=manifest,
                                    kubeconfig=tenant.kubeconfig)
    assert applied.stdout.strip() == "pod/api created"
    assert control_plane.wait_for_pod_bound(tenant.namespace, "api") == node
    stored = control_plane.api.get(f"/api/v1/namespaces/{tenant.namespace}/pods/api").json()
    assert {k: v for k, v in annotations(stored).items() if k != "kubectl.kubernetes.io/last-applied-configuration"} \
        == {k: v for k, v in dry_notes.items() if k != "kubectl.kubernetes.io/last-applied-configuration"}

    unknown = control_plane.kubectl("-n", tenant.namespace, "apply", "-f", "-", check=False,
                                    input=yaml.safe_dump(class_pod("bad", "platinum")), kubeconfig=tenant.kubeconfig)
    assert unknown.returncode == 1
    assert 'admission webhook "mutate-pods.qosgate.io" denied the request: qosgate:' in unknown.stderr
    assert "platinum" in unknown.stderr


def test_qosgate_render_turns_a_native_kep3008_manifest_into_one_the_server_admits(
        control_plane: ControlPlane, qosgate: QosgateStack, scheduler: Scheduler, node_pool: NodePool) -> None:
    tenant = make_tenant(control_plane)
    node_pool.add(memory="16Gi")
    native = node_pool.pin(class_pod("native", None, memory="128Mi"))
    native["spec"]["qosResources"] = [{"name": "memory-qos", "class": "gold"}]
    rendered = subprocess.run([sys.executable, "-m", "qosgate.cli.main", "render", "-"], input=yaml.safe_dump(native),
                              capture_output=True, text=True, check=True).stdout
    control_plane.kubectl("-n", tenant.namespace, "apply", "-f", "-", input=rendered, kubeconfig=tenant.kubeconfig)
    control_plane.wait_for_pod_bound(tenant.namespace, "native")
    stored = control_plane.api.get(f"/api/v1/namespaces/{tenant.namespace}/pods/native").json()
    assert annotations(stored)[CARRIER] == "memory-qos=gold"
    assert annotations(stored)[MEMORY_MIN] == str(128 * MI)


# ----------------------------------------------------------------------------------------------- KEP-3008 fields


def native_pod(name: str) -> dict[str, Any]:
    pod = class_pod(name, None)  # parked: never bound (a bound pod's delete would wait for a kubelet)
    pod["spec"]["qosResources"] = [{"name": "memory-qos", "class": "gold"}]
    pod["spec"]["containers"][0]["resources"]["qosResources"] = [{"name": "memory-qos", "class": "silver"}]
    return pod


UNKNOWN = ('unknown field "spec.qosResources"', 'unknown field "spec.containers[0].resources.qosResources"')


def test_the_real_server_refuses_kep3008_fields_under_strict_and_drops_them_under_warn_and_ignore(
        control_plane: ControlPlane, qosgate: QosgateStack) -> None:
    namespace = control_plane.create_namespace("kep3008")
    pods = f"/api/v1/namespaces/{namespace}/pods"

    strict = control_plane.api.post(pods, json=native_pod("strict"), params={"fieldValidation": "Strict"})
    assert strict.status_code == 400
    body = strict.json()
    assert body["reason"] == "BadRequest"
    assert body["message"].startswith('Pod in version "v1" cannot be handled as a Pod: strict decoding error: ')
    assert all(field in body["message"] for field in UNKNOWN)  # both named, in the body's field order
    assert warnings_of(strict) == []

    for mode in ("Warn", None):  # None: no parameter, the server's default is Warn
        name = f"warn-{(mode or 'default').lower()}"
        params = {"fieldValidation": mode} if mode else {}
        warned = control_plane.api.post(pods, json=native_pod(name), params=params)
        assert warned.status_code == 201, warned.text
        assert sorted(warnings_of(warned)) == sorted(UNKNOWN)
        stored = control_plane.api.get(f"{pods}/{name}").json()
        assert "qosResources" not in json.dumps(stored)
        # Decoding happened before admission: qosgate saw a pod that asks for nothing.
        assert not any(k.startswith("qosgate.io/") for k in annotations(stored))

    ignored = control_plane.api.post(pods, json=native_pod("ignore"), params={"fieldValidation": "Ignore"})
    assert ignored.status_code == 201 and warnings_of(ignored) == []
    assert "qosResources" not in json.dumps(ignored.json())

    # Carrier and native fields disagreeing (gold vs a native container-level silver): the native form
    # never reaches the webhook, so the carrier alone decides.
    both = native_pod("both")
    both["metadata"]["annotations"] = {CARRIER: "memory-qos=gold"}
    answer = control_plane.api.post(pods, json=both)
    assert answer.status_code == 201
    assert json.loads(annotations(answer.json())["qosgate.io/resolved"]) == {"app": {"memory-qos": "gold"}}


def test_kubectl_and_server_side_apply_refuse_kep3008_fields_in_every_mode(
        control_plane: ControlPlane, qosgate: QosgateStack) -> None:
    namespace = control_plane.create_namespace("kep3008")
    manifest = yaml.safe_dump(native_pod("native"))

    default = control_plane.kubectl("-n", namespace, "apply", "-f", "-", input=manifest, check=False)
    assert default.returncode == 1  # kubectl sends fieldValidation=Strict by default
    assert 'Pod in version "v1" cannot be handled as a Pod: strict decoding error:' in default.stderr

    warn = control_plane.kubectl("-n", namespace, "apply", "--validate=warn", "-f", "-", input=manifest)
    assert sorted(line for line in warn.stderr.splitlines() if line.startswith("Warning:")) == sorted(
        f"Warning: {field}" for field in UNKNOWN)
    control_plane.api.delete(f"/api/v1/namespaces/{namespace}/pods/native", params={"gracePeriodSeconds": "0"})

    # Server-side apply builds a typed patch first: unknown fields fail it whatever fieldValidation says,
    # with HTTP 500 (not 400) and a different wording.
    for mode in ("Strict", "Warn", "Ignore"):
        answer = control_plane.api.patch(f"/api/v1/namespaces/{namespace}/pods/native", content=manifest,
                                         params={"fieldManager": "test", "fieldValidation": mode},
                                         headers={"Content-Type": "application/apply-patch+yaml"})
        assert answer.status_code == 500, (mode, answer.text)
        message = answer.json()["message"]
        assert message.startswith("failed to create typed patch object")
        assert ".spec.qosResources: field not declared in schema" in message


# ----------------------------------------------------------------------------------------------- tampering


def test_a_tenant_cannot_forge_owned_annotations_on_create(
        control_plane: ControlPlane, qosgate: QosgateStack) -> None:
    tenant = make_tenant(control_plane)
    pods = f"/api/v1/namespaces/{tenant.namespace}/pods"
    forged = {MEMORY_MIN: "1", "memory.min.memory-qos.nri.io/app": "max", "qosgate.io/resolved": "{}",
              "memory.min.memory-qos.nri.io/sidecar": "1"}
    answer = tenant.http.post(pods, json=class_pod("gold", "gold", annotations=forged))
    assert answer.status_code == 201, answer.text
    assert any(w.startswith(OWNED_REPLACED) for w in warnings_of(answer))
    notes = annotations(answer.json())
    assert notes[MEMORY_MIN] == str(64 * MI) and notes["memory.min.memory-qos.nri.io/app"] == str(64 * MI)
    assert "memory.min.memory-qos.nri.io/sidecar" not in notes

    # A pod asking for no class keeps none of them.
    plain = tenant.http.post(pods, json=class_pod("plain", None, annotations={MEMORY_MIN: str(GI)}))
    assert plain.status_code == 201
    assert MEMORY_MIN not in annotations(plain.json())


def test_a_tenant_cannot_change_or_drop_a_class_on_update(control_plane: ControlPlane, qosgate: QosgateStack) -> None:
    tenant = make_tenant(control_plane)
    path = f"/api/v1/namespaces/{tenant.namespace}/pods/web"
    tenant.http.post(f"/api/v1/namespaces/{tenant.namespace}/pods", json=class_pod("web", "gold")).raise_for_status()

    for change in ({CARRIER: "memory-qos=bronze"}, {CARRIER: None}):
        refused = tenant.http.patch(path, json={"metadata": {"annotations": change}}, headers=MERGE)
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"].startswith(
            'admission webhook "validate-pods.qosgate.io" denied the request: qosgate: QoS classes of a pod are '
            "immutable")

    # Owned annotations edited on UPDATE are put back by the mutating webhook (from oldObject).
    edited = tenant.http.patch(path, json={"metadata": {"annotations": {MEMORY_MIN: "1"}}}, headers=MERGE)
    assert edited.status_code == 200, edited.text
    assert annotations(edited.json())[MEMORY_MIN] == str(64 * MI)
    assert any(w.startswith(OWNED_REPLACED) for w in warnings_of(edited))


def test_a_tenant_with_edit_cannot_write_quota_configmaps(control_plane: ControlPlane, qosgate: QosgateStack) -> None:
    tenant = make_tenant(control_plane)
    configmaps = f"/api/v1/namespaces/{tenant.namespace}/configmaps"
    control_plane.api.post(configmaps, json=quota_configmap("quota", 2)).raise_for_status()  # the admin's
    denial = (f"only qosgate admins may {{verb}} the quota ConfigMap {tenant.namespace}/{{name}}; user "
              f"'{tenant.user}' is neither an admin user nor in an admin group (qosgate:admins, system:masters)")

    def refused(answer: Any, verb: str, name: str) -> None:
        assert answer.status_code == 403, answer.text
        # (labelling a ConfigMap that is no quota also names what is wrong with its content, after this)
        expected = denial.format(verb=verb, name=name)
        assert answer.json()["message"].startswith('admission webhook "validate-quota-configmaps.qosgate.io" '
                                                   f"denied the request: qosgate: {expected}")

    refused(tenant.http.post(configmaps, json=quota_configmap("mine", 100)), "create", "mine")
    refused(tenant.http.patch(f"{configmaps}/quota", json={"data": {"quota.yaml": "pod: []\n"}}, headers=MERGE),
            "change", "quota")
    refused(tenant.http.patch(f"{configmaps}/quota", json={"metadata": {"labels": {"qosgate.io/quota": None}}},
                              headers=MERGE), "change", "quota")
    refused(tenant.http.delete(f"{configmaps}/quota"), "delete", "quota")
    tenant.http.post(configmaps, json={"metadata": {"name": "app"}, "data": {"a": "b"}}).raise_for_status()
    refused(tenant.http.patch(f"{configmaps}/app", json={"metadata": {"labels": {"qosgate.io/quota": "true"}}},
                              headers=MERGE), "change", "app")
    # The catalog is out of reach already through RBAC (edit is namespaced).
    catalog = tenant.http.patch("/api/v1/namespaces/qosgate-system/configmaps/qosgate-classes",
                                json={"data": {"catalog.yaml": "{}"}}, headers=MERGE)
    assert catalog.status_code == 403 and catalog.json()["reason"] == "Forbidden"
    assert "admission webhook" not in catalog.json()["message"]
    assert control_plane.api.get(f"{configmaps}/quota").json()["data"] == quota_configmap("quota", 2)["data"]


def test_with_the_mutating_webhook_unreachable_the_validating_one_refuses_forged_and_unmutated_pods(
        control_plane: ControlPlane, qosgate: QosgateStack) -> None:
    """failurePolicy Ignore on the mutating side never lets a wrongly annotated pod in (manifests comment)."""
    tenant = make_tenant(control_plane)
    pods = f"/api/v1/namespaces/{tenant.namespace}/pods"
    mutating = next(o for o in qosgate.webhook_configurations() if o["kind"] == "MutatingWebhookConfiguration")
    unreachable = json.loads(json.dumps(mutating))
    for hook in unreachable["webhooks"]:
        hook["clientConfig"]["url"] = hook["clientConfig"]["url"].replace(
            f":{qosgate.webhook_balancer.port}/", ":1/")
    qosgate.apply([unreachable])
    try:
        def skipped() -> Any:
            answer = tenant.http.post(pods, params={"dryRun": "All"}, json=class_pod("probe", "gold"))
            return answer if answer.status_code != 201 else None

        missing = wait_until(skipped, 30, "kube-apiserver to use the unreachable mutating webhook", interval=0.25)
        # Not a verdict on the pod: a retryable 503 (clients and controllers retry it).
        assert missing.status_code == 503
        assert "that webhook did not run (unreachable or timed out); retry the request" in missing.json()["message"]
        forged = tenant.http.post(pods, json=class_pod("forged", "gold", annotations={
            MEMORY_MIN: "1", "qosgate.io/resolved": '{"app":{"memory-qos":"gold"}}',
            "memory.min.memory-qos.nri.io/app": "1"}))
        assert forged.status_code == 403
        assert "annotation qosgate.io/memory-min is '1', the catalog computes '67108864'" in forged.json()["message"]
        # Pods without a class are not qosgate's business: unaffected.
        assert tenant.http.post(pods, json=class_pod("plain", None)).status_code == 201
    finally:
        qosgate.register_webhooks()
        qosgate.wait_for_admission()


# ----------------------------------------------------------------------------------------------- catalog edits


def catalog_configmap(qosgate: QosgateStack) -> dict[str, Any]:
    return qosgate.rendered("ConfigMap", "qosgate-classes")


def test_catalog_edit_under_running_class_pods_never_blocks_their_updates(
        control_plane: ControlPlane, qosgate: QosgateStack, scheduler: Scheduler, node_pool: NodePool) -> None:
    tenant = make_tenant(control_plane)
    node_pool.add(memory="16Gi")
    pods = f"/api/v1/namespaces/{tenant.namespace}/pods"
    for name, klass in (("gold", "gold"), ("silver", "silver")):
        tenant.http.post(pods, json=node_pool.pin(class_pod(name, klass, memory="256Mi"))).raise_for_status()
        control_plane.wait_for_pod_bound(tenant.namespace, name)
        control_plane.set_pod_phase(tenant.namespace, name, "Running")
    admitted = {name: annotations(control_plane.api.get(f"{pods}/{name}").json()) for name in ("gold", "silver")}

    original = catalog_configmap(qosgate)
    edited = json.loads(json.dumps(original))
    document = yaml.safe_load(edited["data"]["catalog.yaml"])
    classes = document["resources"][0]["classes"]
    document["resources"][0]["classes"] = [c for c in classes if c["name"] != "silver"]
    next(c for c in classes if c["name"] == "gold")["memoryMinPercent"] = 50
    edited["data"]["catalog.yaml"] = yaml.safe_dump(document)

    # An invalid catalog is refused at admission, naming the field.
    broken = json.loads(json.dumps(edited))
    broken["data"]["catalog.yaml"] = broken["data"]["catalog.yaml"].replace("memoryMinPercent: 50",
                                                                            "memoryMinPercent: 500")
    refused = control_plane.api.put(CATALOG_CONFIGMAP, json=broken)
    assert refused.status_code == 403
    assert 'admission webhook "validate-system-configmaps.qosgate.io" denied the request' in refused.json()["message"]
    assert "memoryMinPercent" in refused.json()["message"]

    try:
        put_catalog(control_plane, qosgate, edited)
        for name in ("gold", "silver"):
            labelled = tenant.http.patch(f"{pods}/{name}", json={"metadata": {"labels": {"tier": "web"}}},
                                         headers=MERGE)
            assert labelled.status_code == 200, labelled.text
            finalized = tenant.http.patch(f"{pods}/{name}", json={"metadata": {"finalizers": ["example.com/hold"]}},
                                          headers=MERGE)
            assert finalized.status_code == 200, finalized.text
            released = tenant.http.patch(f"{pods}/{name}", json={"metadata": {"finalizers": None}}, headers=MERGE)
            assert released.status_code == 200, released.text
            assert annotations(released.json()) == admitted[name]
            # The kubelet's status writes (the status subresource) are never qosgate's business.
            control_plane.set_pod_phase(tenant.namespace, name, "Running")

        gone = tenant.http.post(pods, json=class_pod("new-silver", "silver"))
        assert gone.status_code == 403 and "silver" in gone.json()["message"]
        halved = tenant.http.post(pods, json=class_pod("new-gold", "gold", memory="256Mi"))
        assert halved.status_code == 201
        assert annotations(halved.json())[MEMORY_MIN] == str(128 * MI)
    finally:
        put_catalog(control_plane, qosgate, original)
