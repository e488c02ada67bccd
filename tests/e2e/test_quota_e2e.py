"""Quota admission end to end: the fake kube-apiserver calls our webhooks over HTTPS the way kube-apiserver does.

Three webhook replicas, each with its own API client, informer-fed caches and ledger client, sit behind one
registered validating webhook (and one mutating webhook) whose URL is a tiny round-robin TLS load balancer —
what a Service in front of a Deployment is. Tenants create pods with the official client from many threads.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from qosgate.core.catalog import CatalogHolder, load_catalog_yaml
from qosgate.kube.informer import ClusterCache
from qosgate.serving.http import Request, Response, Route, Router
from qosgate.serving.server import Listener
from qosgate.webhook.app import webhook_routes
from qosgate.webhook.quota.books import ALLOWANCE_PREFIX, AllowanceEntry, ledger_books, ledger_name
from qosgate.webhook.quota.engine import QuotaEngine
from qosgate.webhook.quota.source import QuotaSource
from qosgate.webhook.validate import ValidatorSettings, build_validator
from tests.fakeapi import FakeAPIServer
from tests.support.serving import reloader, serve_in_thread
from tests.support.tls import WEBHOOK_HOSTNAME, async_https_client, eventually

REPLICAS = 3
TTL = 30.0
CARRIER = "qos-resources.qosgate.io"
VALIDATE = "qosgate-validate.qosgate.io"
MUTATE = "qosgate-mutate.qosgate.io"
NAMESPACES = ("qosgate-system", "team-a", "team-b", "team-c")


def quota_cm(namespace: str, capacity: int) -> dict[str, Any]:
    text = f"pod:\n- name: memory-qos\n  classes:\n  - {{name: gold, capacity: {capacity}}}\n  - {{name: bronze}}\n"
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "qos-quota", "namespace": namespace, "labels": {"qosgate.io/quota": "true"}},
            "data": {"quota.yaml": text}}


def gold_pod(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
             klass: str = "gold") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": labels or {"app": "web"},
                         "annotations": {CARRIER: f"memory-qos={klass}", **(annotations or {})}},
            "spec": {"containers": [{"name": "app", "image": "nginx",
                                     "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]}}


class RoundRobin:
    """A minimal L7 load balancer: each request goes to the next replica, over verified HTTPS."""

    def __init__(self, cert_dir: Path) -> None:
        self.cert_dir = cert_dir
        self.ports: list[int] = []
        self.hits: Counter[int] = Counter()
        self._next = itertools.count()
        self._clients: list[Any] | None = None

    async def forward(self, request: Request) -> Response:
        if self._clients is None:  # created on the server's own loop
            # Unbounded pools, like a Service: a capped client pool would make quick /mutate calls queue
            # behind /validate calls that wait in their namespace's group commit.
            unbounded = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            self._clients = [async_https_client(self.cert_dir, port, timeout=30, limits=unbounded)
                             for port in self.ports]
        index = next(self._next) % len(self.ports)
        self.hits[index] += 1
        answer = await self._clients[index].post(request.path, content=request.body,
                                                 headers={"content-type": "application/json"})
        return Response(answer.status_code, answer.content, answer.headers.get("content-type", "application/json"))

    def routes(self) -> list[Route]:
        return [Route("POST", path, self.forward, max_body=8 * 2**20) for path in ("/mutate", "/validate")]


def deny_failing_pods(request: Request) -> Response:
    """A second validating webhook refusing pods labelled fail=after-quota: the create fails after our
    webhook admitted (and reserved) the pod, exactly like a later admission step or a storage error."""
    review = orjson.loads(request.body)["request"]
    labels = ((review.get("object") or {}).get("metadata") or {}).get("labels") or {}
    allowed = labels.get("fail") != "after-quota"
    response: dict[str, Any] = {"uid": review["uid"], "allowed": allowed}
    if not allowed:
        response["status"] = {"code": 500, "message": "simulated failure after quota admission"}
    return Response.json({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})


@dataclass
class Replica:
    cache: ClusterCache
    engine: QuotaEngine
    api: Any


@dataclass
class Cluster:
    api: FakeAPIServer
    replicas: list[Replica]
    balancer: RoundRobin
    tenant: client.CoreV1Api
    admin: client.CoreV1Api
    ports: dict[str, int]
    ca_pem: bytes
    clock_offset: list[float] = field(default_factory=lambda: [0.0])
    catalog: CatalogHolder = field(default_factory=CatalogHolder)

    def register_mutating(self, url: str | None = None, failure_policy: str = "Ignore") -> None:
        self.api.add_admission_webhook(
            MUTATE, "mutating", url or f"https://127.0.0.1:{self.ports['lb']}/mutate", self.ca_pem,
            # 10 s like the validating webhook below: 200 creates at once on a loaded 2-core CI machine queue up.
            server_hostname=WEBHOOK_HOSTNAME, failure_policy=failure_policy, timeout_seconds=10,
            side_effects="None", reinvocation_policy="IfNeeded",
            # As manifests/base/mutatingwebhookconfiguration.yaml: UPDATEs too (they keep the admitted annotations).
            rules=[{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                    "operations": ["CREATE", "UPDATE"]}])


def _client(api: FakeAPIServer, tmp: Path, token: str) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=api.write_kubeconfig(tmp / f"kubeconfig-{token}", token=token),
                            client_configuration=configuration)
    configuration.connection_pool_maxsize = 256  # 200 client threads share it
    return client.ApiClient(configuration)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, cert_dir: Path) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("e2e")
    api = FakeAPIServer().start()
    api.seed({"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}} for n in NAMESPACES)
    api.add_user("tenant", "alice", ["team-a-devs"])
    clock_offset = [0.0]
    replicas: list[Replica] = []
    listeners: list[Listener] = []
    holder = CatalogHolder()
    for _ in range(REPLICAS):
        replica_api = api.kube_client()  # each replica: its own connection pool, caches and ledger client
        cache = ClusterCache(replica_api, watch_nodes=False, watch_quota_configmaps=True)
        cache.start()
        # wait_timeout matches the 10 s webhook timeout registered below: a loaded CI machine must not turn
        # queueing into 503s (production keeps it under the 3 s timeoutSeconds of manifests/).
        engine = QuotaEngine(cache.pods, QuotaSource(cache.quota_configmaps), ledger_books(replica_api), ttl=TTL,
                             clock=lambda: time.time() + clock_offset[0], wait_timeout=9.0)
        validator = build_validator(holder, engine, ValidatorSettings())
        listeners.append(Listener(f"replica-{len(replicas)}", Router(webhook_routes(holder, validator)), 0,
                                  tls=reloader(cert_dir)))
        replicas.append(Replica(cache, engine, replica_api))
    balancer = RoundRobin(cert_dir)
    listeners += [Listener("lb", Router(balancer.routes()), 0, tls=reloader(cert_dir)),
                  Listener("deny", Router([Route("POST", "/", deny_failing_pods, max_body=8 * 2**20)]), 0,
                           tls=reloader(cert_dir))]
    tenant_api, admin_api = _client(api, tmp, "tenant"), _client(api, tmp, "admin")
    try:
        # Nothing is in flight at teardown; don't wait out keep-alive connections between the servers.
        with serve_in_thread(listeners) as server:
            ports = list(server.ports.values())
            balancer.ports = ports[:REPLICAS]
            ca_pem = (cert_dir / "ca.crt").read_bytes()
            env = Cluster(api, replicas, balancer, client.CoreV1Api(tenant_api), client.CoreV1Api(admin_api),
                          {"lb": ports[REPLICAS], "deny": ports[REPLICAS + 1]}, ca_pem, clock_offset, holder)
            env.register_mutating()
            api.add_admission_webhook(
                VALIDATE, "validating", f"https://127.0.0.1:{env.ports['lb']}/validate", ca_pem,
                server_hostname=WEBHOOK_HOSTNAME, failure_policy="Fail", timeout_seconds=10,
                side_effects="NoneOnDryRun",
                rules=[{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                        "operations": ["CREATE", "UPDATE"]},
                       {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"],
                        "operations": ["CREATE", "UPDATE", "DELETE"]}])
            api.add_admission_webhook(
                "zz-after-quota.example.com", "validating", f"https://127.0.0.1:{env.ports['deny']}/", ca_pem,
                server_hostname=WEBHOOK_HOSTNAME, failure_policy="Fail", timeout_seconds=10,
                # As manifests/base/mutatingwebhookconfiguration.yaml: UPDATEs too (they keep the admitted annotations).
            rules=[{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                    "operations": ["CREATE", "UPDATE"]}])
            for replica in replicas:
                assert replica.cache.wait_for_sync(30)
            for namespace, capacity in (("team-a", 10), ("team-b", 2), ("team-c", 5)):
                env.admin.create_namespaced_config_map(namespace, quota_cm(namespace, capacity))
            eventually(lambda: all(r.engine.quotas.quotas_for(ns).quotas for r in replicas for ns in NAMESPACES[1:]))
            yield env
            # Close the fake's webhook clients first: their keep-alive connections would hold up the
            # servers' graceful shutdown.
            for name in (MUTATE, VALIDATE, "zz-after-quota.example.com"):
                api.remove_admission_webhook(name)
    finally:
        for replica in replicas:
            replica.cache.stop()
        tenant_api.close()
        admin_api.close()
        api.stop()


def create(core: client.CoreV1Api, namespace: str, body: dict[str, Any], dry_run: bool = False) -> str | None:
    """The pod's name when created, else None; refusals are checked by the caller through `create_error`."""
    try:
        created = core.create_namespaced_pod(namespace, body, dry_run="All" if dry_run else None)
    except ApiException:
        return None
    return created.metadata.name


def create_error(core: client.CoreV1Api, namespace: str, body: dict[str, Any]) -> tuple[int, str]:
    with pytest.raises(ApiException) as info:
        core.create_namespaced_pod(namespace, body)
    return info.value.status, orjson.loads(info.value.body)["message"]


def concurrent_creates(core: client.CoreV1Api, namespace: str, count: int) -> tuple[list[str], list[ApiException]]:
    """`count` creates at once. A retryable refusal (503: the mutating webhook timed out on this loaded
    single-process cluster, or quota could not be checked) is sent again, as clients and controllers do."""
    start = threading.Barrier(count)

    def one(_: int) -> str | ApiException:
        start.wait()
        last: ApiException | None = None
        for _attempt in range(20):
            try:
                return core.create_namespaced_pod(namespace, gold_pod()).metadata.name
            except ApiException as exc:
                if exc.status != 503:
                    return exc
                last = exc
                time.sleep(0.2)
        assert last is not None
        return last

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(one, range(count)))
    return [r for r in results if isinstance(r, str)], [r for r in results if isinstance(r, ApiException)]


def wait_seen(cluster: Cluster, namespace: str, count: int) -> None:
    eventually(lambda: all(len([p for p in r.cache.pods.in_namespace(namespace) if p.active]) == count
                           for r in cluster.replicas), message=f"caches never showed {count} pods in {namespace}")


def test_dry_run_creates_consume_nothing(cluster: Cluster) -> None:
    for _ in range(15):
        assert create(cluster.tenant, "team-a", gold_pod(), dry_run=True) is not None
    ledger = cluster.api.get_object("configmaps", "qosgate-system", ledger_name("team-a"))
    assert ledger is None or not ledger.get("data")
    assert cluster.api.objects("pods", "team-a") == []


def test_200_concurrent_creates_against_capacity_10(cluster: Cluster) -> None:
    admitted, refused = concurrent_creates(cluster.tenant, "team-a", 200)
    assert len(admitted) == 10
    assert len(refused) == 190
    expected = (f'admission webhook "{VALIDATE}" denied the request: qosgate: namespace team-a: memory-qos class '
                "gold at capacity 10/10")
    assert {(exc.status, orjson.loads(exc.body)["message"]) for exc in refused} == {(403, expected)}
    assert len(cluster.api.objects("pods", "team-a")) == 10
    # Every replica took part, and the reservations went through the shared ledger.
    assert all(cluster.balancer.hits[i] for i in range(REPLICAS))
    ledger = cluster.api.get_object("configmaps", "qosgate-system", ledger_name("team-a"))
    assert ledger is not None
    # Each admitted pod is in the ledger: listed in the allowance of the replica that admitted it.
    listed = {uid for key, text in ledger["data"].items() if key.startswith(ALLOWANCE_PREFIX)
              for uid in (AllowanceEntry.decode(text) or AllowanceEntry({}, 0)).listed}
    assert {p["metadata"]["uid"] for p in cluster.api.objects("pods", "team-a")} <= listed
    wait_seen(cluster, "team-a", 10)
    status, message = create_error(cluster.tenant, "team-a", gold_pod())
    assert status == 403 and message.endswith("at capacity 10/10")
    # Classless pods and classes without capacity are never held up by the full class.
    plain = gold_pod()
    del plain["metadata"]["annotations"][CARRIER]
    assert create(cluster.tenant, "team-a", plain) is not None
    assert create(cluster.tenant, "team-a", gold_pod(klass="bronze")) is not None


def test_deleting_pods_frees_capacity(cluster: Cluster) -> None:
    gold = [p for p in cluster.api.objects("pods", "team-a")
            if p["metadata"]["annotations"].get(CARRIER) == "memory-qos=gold"]
    assert len(gold) == 10
    for pod in gold[:3]:
        cluster.tenant.delete_namespaced_pod(pod["metadata"]["name"], "team-a")
    eventually(lambda: all(r.cache.pods.get(p["metadata"]["uid"]) is None for r in cluster.replicas
                           for p in gold[:3]))
    admitted, refused = concurrent_creates(cluster.tenant, "team-a", 20)
    assert len(admitted) == 3 and len(refused) == 17


def test_failed_create_frees_its_reservation_after_the_ttl(cluster: Cluster) -> None:
    for _ in range(2):
        status, message = create_error(cluster.tenant, "team-b", gold_pod(labels={"fail": "after-quota"}))
        assert status == 500 and "simulated failure after quota admission" in message
    assert cluster.api.objects("pods", "team-b") == []
    # Both units of capacity are held by reservations of pods that will never exist...
    status, message = create_error(cluster.tenant, "team-b", gold_pod())
    assert status == 403 and message.endswith("memory-qos class gold at capacity 2/2")
    # ...until the TTL passes (the replicas' clocks are moved instead of sleeping through it).
    cluster.clock_offset[0] += TTL + 1
    try:
        assert create(cluster.tenant, "team-b", gold_pod()) is not None
        assert create(cluster.tenant, "team-b", gold_pod()) is not None
        status, message = create_error(cluster.tenant, "team-b", gold_pod())
        assert message.endswith("at capacity 2/2")
    finally:
        cluster.clock_offset[0] -= TTL + 1


def test_forged_backend_annotations_bypassing_the_mutating_webhook(cluster: Cluster) -> None:
    # The mutating webhook is unreachable and fails open (failurePolicy Ignore): the validating webhook stands.
    cluster.register_mutating(url="https://127.0.0.1:1/mutate")
    try:
        forged = gold_pod(annotations={"qosgate.io/memory-min": "1", "memory.min.memory-qos.nri.io/app": "1"})
        status, message = create_error(cluster.tenant, "team-c", forged)
        assert status == 403
        assert "disagree with the catalog (the qosgate mutating webhook was bypassed, or they were edited)" in message
        assert "qosgate.io/memory-min is '1', the catalog computes '67108864'" in message
        status, message = create_error(cluster.tenant, "team-c", gold_pod())
        assert status == 503 and "that webhook did not run (unreachable or timed out); retry the request" in message
        classless_forged = {"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": "sneaky", "annotations": {"qosgate.io/memory-min": "99999999999"}},
                            "spec": {"containers": [{"name": "app", "image": "nginx"}]}}
        status, message = create_error(cluster.tenant, "team-c", classless_forged)
        assert "qosgate.io/memory-min is set, but the catalog computes none" in message
    finally:
        cluster.register_mutating()
    assert create(cluster.tenant, "team-c", gold_pod()) is not None


def test_update_changing_a_class_is_denied(cluster: Cluster) -> None:
    name = create(cluster.tenant, "team-c", gold_pod())
    assert name is not None
    with pytest.raises(ApiException) as info:
        cluster.tenant.patch_namespaced_pod(name, "team-c",
                                            {"metadata": {"annotations": {CARRIER: "memory-qos=bronze"}}})
    assert info.value.status == 403
    assert "QoS classes of a pod are immutable" in orjson.loads(info.value.body)["message"]
    # A backend annotation set on UPDATE is put back to what the pod was admitted with (the mutating webhook),
    # so the node never sees it; without the mutating webhook the validating one refuses it (test above).
    admitted = cluster.admin.read_namespaced_pod(name, "team-c").metadata.annotations
    cluster.tenant.patch_namespaced_pod(
        name, "team-c", {"metadata": {"annotations": {"memory.min.memory-qos.nri.io/app": "1"}}})
    assert cluster.admin.read_namespaced_pod(name, "team-c").metadata.annotations == admitted
    # Unrelated edits still go through.
    cluster.tenant.patch_namespaced_pod(name, "team-c", {"metadata": {"labels": {"tier": "web"}}})


def test_catalog_edit_under_running_class_pods_blocks_no_update(cluster: Cluster) -> None:
    """Issue 10 finding 4: after a catalog edit, label changes and finalizer removal of existing class pods
    (gold, whose class changed, and bronze, which no longer exists) must still pass."""
    gold = create(cluster.tenant, "team-c", gold_pod(klass="gold"))
    bronze = create(cluster.tenant, "team-c", gold_pod(klass="bronze"))
    assert gold is not None and bronze is not None
    before = {name: cluster.admin.read_namespaced_pod(name, "team-c").metadata.annotations for name in (gold, bronze)}
    previous = cluster.catalog.current
    cluster.catalog.replace(load_catalog_yaml(
        "resources:\n- name: memory-qos\n  classes:\n  - {name: gold, memoryMinPercent: 80}\n", "edited"),
        "edited in test")
    try:
        for name in (gold, bronze):
            cluster.tenant.patch_namespaced_pod(name, "team-c", {"metadata": {"labels": {"edited": "yes"},
                                                                              "finalizers": ["example.com/hold"]}})
            cluster.admin.patch_namespaced_pod(name, "team-c", {"metadata": {"finalizers": None}})
            pod = cluster.admin.read_namespaced_pod(name, "team-c")
            assert pod.metadata.labels["edited"] == "yes" and not pod.metadata.finalizers
            assert pod.metadata.annotations == before[name]  # what the node applied stays what it was
    finally:
        cluster.catalog.replace(previous, "restored")


def test_tenant_cannot_touch_quota_configmaps(cluster: Cluster) -> None:
    def refused(call: Any, *args: Any) -> str:
        with pytest.raises(ApiException) as info:
            call(*args)
        assert info.value.status == 403
        return orjson.loads(info.value.body)["message"]

    raised = quota_cm("team-c", 1000)
    message = refused(cluster.tenant.replace_namespaced_config_map, "qos-quota", "team-c", raised)
    assert "only qosgate admins may change the quota ConfigMap team-c/qos-quota; user 'alice'" in message
    refused(cluster.tenant.patch_namespaced_config_map, "qos-quota", "team-c",
            {"metadata": {"labels": {"qosgate.io/quota": None}}})
    refused(cluster.tenant.delete_namespaced_config_map, "qos-quota", "team-c")
    extra = quota_cm("team-c", 1000)
    extra["metadata"]["name"] = "my-own-quota"
    refused(cluster.tenant.create_namespaced_config_map, "team-c", extra)
    plain = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "b"}}
    cluster.tenant.create_namespaced_config_map("team-c", plain)
    refused(cluster.tenant.patch_namespaced_config_map, "settings", "team-c",
            {"metadata": {"labels": {"qosgate.io/quota": "true"}}})
    # The quota is untouched, and an admin's invalid edit is refused with the field named.
    stored = cluster.api.get_object("configmaps", "team-c", "qos-quota")
    assert "capacity: 5" in stored["data"]["quota.yaml"]
    broken = quota_cm("team-c", 5)
    broken["data"]["quota.yaml"] = "pod: [{name: memory-qos, classes: [{name: gold, capacity: many}]}]"
    message = refused(cluster.admin.replace_namespaced_config_map, "qos-quota", "team-c", broken)
    assert "pod[0].classes[0].capacity: must be an integer" in message
