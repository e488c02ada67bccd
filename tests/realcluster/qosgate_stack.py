"""qosgate installed on the real control plane: what `kubectl apply -k` + Deployments would give, as processes.

``QosgateStack(control_plane, directory).install()``:

1. renders ``manifests/base`` with the real kustomize and applies every object except the workloads
   (Deployments, DaemonSet: there is no kubelet to run them) and the webhook configurations — Namespaces,
   ServiceAccounts, RBAC, the catalog and default quota ConfigMaps, Services, PDBs, NetworkPolicies and the
   agent's ValidatingAdmissionPolicy, exactly as shipped;
2. ``qosgate certs generate`` writes the serving CA/pair and kube-scheduler's client pair;
3. starts ``webhook_replicas`` × ``qosgate serve webhook`` and ``extender_replicas`` × ``qosgate serve
   extender --leader-elect``, each authenticating as its shipped ServiceAccount (TokenRequest token), so the
   manifests' RBAC is what they run with; each set sits behind a loopback ``TcpBalancer`` (the Service) that
   routes to ready replicas only (for the extender every replica with synced caches: followers forward the
   verbs to the Lease holder);
4. registers the shipped Mutating/ValidatingWebhookConfigurations with ``clientConfig.service`` rewritten to
   ``url: https://127.0.0.1:<balancer>/<path>`` and the caBundle injected, and waits until kube-apiserver
   calls them.

``start_agent(node, cgroup_root, proc_root)`` runs ``qosgate agent`` for one Node as the DaemonSet would: its
pod bound to the node, a token bound to that pod (so the shipped admission policy sees the node), the
cgroup tree and /proc given as directories (no kubelet, no kernel here: tests lay them out with
tests/agent/faketree.FakeNode; the kernel itself is tested in tests/kernel).

kube-scheduler configurations come from ``manifests/scheduler/kube-scheduler-config.yaml`` (self-managed
mode) and ``manifests/overlays/second-scheduler/kube-scheduler-config.yaml`` (second scheduler) with only
the extender's URL and the three TLS file paths changed (``scheduler_config``).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from tests.realcluster.balancer import Backend, TcpBalancer
from tests.realcluster.controlplane import ControlPlane, StartupError, _Process, free_port, wait_until
from tests.support.kustomize import render

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
SELF_MANAGED_SCHEDULER_CONFIG = MANIFESTS / "scheduler" / "kube-scheduler-config.yaml"
SECOND_SCHEDULER_DIR = MANIFESTS / "overlays" / "second-scheduler"
SECOND_SCHEDULER_CONFIG = SECOND_SCHEDULER_DIR / "kube-scheduler-config.yaml"
SYSTEM_NAMESPACE = "qosgate-system"
AGENT_NAMESPACE = "qosgate-node"
QOSGATE = (sys.executable, "-m", "qosgate.cli.main")
# Kinds of manifests/base that need a kubelet or a controller to mean anything; everything else is applied.
WORKLOAD_KINDS = frozenset({"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob"})
WEBHOOK_KINDS = frozenset({"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"})
CARRIER = "qos-resources.qosgate.io"
MEMORY_MIN = "qosgate.io/memory-min"
TOKEN_SECONDS = 6 * 3600
# Permissions the running components use that manifests/base does not grant (found on the real server; the
# apiserver answers 403 and the component never gets ready). Applied as extra Roles so the rest of the
# suite can run; test_e2e_rbac.py fails while this is not empty. ServiceAccount → (namespace, rules).
KNOWN_RBAC_GAPS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    # (empty: the first gap found here — the extender watching node-report Leases without list/watch on
    # leases — was fixed in manifests/base/rbac-extender.yaml)
}


# ----------------------------------------------------------------------------------------------- processes


class QosgateProcess:
    """One ``qosgate`` process with a plain-HTTP health port: start, wait ready, SIGTERM, SIGKILL, restart."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, health_port: int,
                 env: Mapping[str, str] | None = None):
        self.name, self.health_port = name, health_port
        self._process = _Process(name, argv, log, env={"PYTHONUNBUFFERED": "1", **(env or {})})
        self.log = log

    @property
    def pid(self) -> int | None:
        return self._process.popen.pid if self._process.popen is not None else None

    @property
    def running(self) -> bool:
        return self._process.running

    def start(self) -> QosgateProcess:
        self._process.start()
        return self

    def health(self, path: str = "/readyz") -> int:
        try:
            return httpx.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=2, trust_env=False).status_code
        except httpx.HTTPError:
            return 0

    def ready(self) -> bool:
        return self.health("/readyz") == 200

    def wait_ready(self, timeout: float = 60) -> QosgateProcess:
        deadline = time.monotonic() + timeout
        while not self.ready():
            self._process.check_running()
            if time.monotonic() > deadline:
                raise StartupError(f"{self.name} not ready after {timeout:.0f}s; last lines of {self.log}:\n"
                                   f"{self._process.tail()}")
            time.sleep(0.1)
        return self

    def wait_alive(self, timeout: float = 60) -> QosgateProcess:
        deadline = time.monotonic() + timeout
        while self.health("/healthz") != 200:
            self._process.check_running()
            if time.monotonic() > deadline:
                raise StartupError(f"{self.name} not alive after {timeout:.0f}s; last lines of {self.log}:\n"
                                   f"{self._process.tail()}")
            time.sleep(0.1)
        return self

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5, trust_env=False).text

    def terminate(self, grace: float = 20) -> None:
        """SIGTERM (qosgate's drain protocol; the extender releases its Lease), SIGKILL after ``grace``."""
        self._process.stop(grace)

    def signal(self, number: int) -> None:
        popen = self._process.popen
        if popen is not None and popen.poll() is None:
            popen.send_signal(number)

    def kill(self) -> None:
        """SIGKILL: a crashed replica (no drain, no Lease release)."""
        popen = self._process.popen
        if popen is not None and popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
        self._process.popen = None

    def tail(self, lines: int = 40) -> str:
        return self._process.tail(lines)


# ----------------------------------------------------------------------------------------------- manifests


def render_base() -> list[dict[str, Any]]:
    return render(MANIFESTS / "base")


def rbac_gap_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for account, (namespace, rules) in KNOWN_RBAC_GAPS.items():
        name = f"qosgate-test-rbac-gap-{account}"
        objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                        "metadata": {"name": name, "namespace": namespace}, "rules": rules})
        objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": {"name": name, "namespace": namespace},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": SYSTEM_NAMESPACE}]})
    return objects


def forbidden_lines(log: Path) -> list[str]:
    """Lines of a qosgate log where the API server refused the component (RBAC)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if "403" in line and "forbidden" in line.lower()]


def loopback_webhook_configuration(obj: Mapping[str, Any], port: int, ca_pem: bytes) -> dict[str, Any]:
    """A rendered webhook configuration with every ``clientConfig.service`` turned into a loopback URL."""
    out = copy.deepcopy(dict(obj))
    for hook in out.get("webhooks") or []:
        client = hook["clientConfig"]
        service = client.pop("service", None)
        if service is not None:
            client["url"] = f"https://127.0.0.1:{port}{service.get('path') or '/'}"
        client["caBundle"] = base64.b64encode(ca_pem).decode()
    return out


def scheduler_config(source: Path, extender_url: str, cert_dir: Path, *, prioritize: bool = True,
                     overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A shipped KubeSchedulerConfiguration with the extender on ``extender_url`` and the TLS files from
    ``cert_dir`` (ca.crt, client.crt, client.key). ``prioritize=False`` drops the prioritize verb.
    ``overrides`` are merged at the top level (e.g. clientConnection qps for benchmarks)."""
    document = yaml.safe_load(source.read_text())
    for extender in document.get("extenders") or []:
        extender["urlPrefix"] = extender_url
        tls = extender.setdefault("tlsConfig", {})
        tls["caFile"] = str(cert_dir / "ca.crt")
        tls["certFile"] = str(cert_dir / "client.crt")
        tls["keyFile"] = str(cert_dir / "client.key")
        if not prioritize:
            extender.pop("prioritizeVerb", None)
            extender.pop("weight", None)
    # The shipped kubeconfig path belongs to a control-plane node; ControlPlane.start_scheduler sets ours.
    document.pop("clientConnection", None)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key].update(value)
        else:
            document[key] = value
    return document


# ----------------------------------------------------------------------------------------------- the stack


@dataclass
class Replica:
    process: QosgateProcess
    port: int

    @property
    def backend(self) -> Backend:
        return Backend(self.port, f"http://127.0.0.1:{self.process.health_port}/readyz")


class QosgateStack:
    """See the module docstring. Context manager; ``stop()`` stops every process it started."""

    def __init__(self, control_plane: ControlPlane, directory: Path, *, webhook_replicas: int = 3,
                 extender_replicas: int = 2, reservation_ttl: float = 10.0,
                 extra_webhook_args: Sequence[str] = (), extra_extender_args: Sequence[str] = ()):
        self.cp = control_plane
        self.directory = directory
        self.cert_dir = directory / "certs"
        self.webhook_replicas = webhook_replicas
        self.extender_replicas = extender_replicas
        self.reservation_ttl = reservation_ttl
        self.extra_webhook_args = list(extra_webhook_args)
        self.extra_extender_args = list(extra_extender_args)
        self.webhooks: list[Replica] = []
        self.extenders: list[Replica] = []
        self.agents: dict[str, QosgateProcess] = {}  # node → its agent
        (directory / "balancers").mkdir(parents=True, exist_ok=True)
        self.webhook_balancer = TcpBalancer(name="webhook-service", directory=directory / "balancers")
        self.extender_balancer = TcpBalancer(name="extender-service", directory=directory / "balancers")
        self.objects: list[dict[str, Any]] = []
        self._names = iter(range(1_000_000))

    # -- lifecycle

    def install(self, timeout: float = 90) -> QosgateStack:
        """Apply, start and register everything; with ``webhook_replicas=0`` no webhook is registered."""
        self.objects = render_base()
        self.apply([o for o in self.objects if o["kind"] not in WORKLOAD_KINDS | WEBHOOK_KINDS])
        self.apply(rbac_gap_objects())
        self._generate_certs()
        self.webhook_balancer.start()
        self.extender_balancer.start()
        self.webhooks = [self._start_webhook(i) for i in range(self.webhook_replicas)]
        self.extenders = [self._start_extender(i) for i in range(self.extender_replicas)]
        for replica in self.webhooks:
            replica.process.wait_ready(timeout)
        for replica in self.extenders:
            replica.process.wait_alive(timeout)
        self.sync_balancers()
        if self.webhooks:
            self.register_webhooks()
            self.wait_for_admission(timeout)
        if self.extenders:
            self.wait_for_extender_leader(timeout)
        return self

    def stop(self) -> None:
        if self.webhooks:
            for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                path = f"/apis/admissionregistration.k8s.io/v1/{kind.lower()}s/qosgate"
                with contextlib.suppress(httpx.HTTPError):
                    self.cp.api.delete(path)
        for node in list(self.agents):
            self.stop_agent(node)
        # SIGTERM everything at once, then wait: the drains overlap.
        replicas = self.webhooks + self.extenders
        for replica in replicas:
            replica.process.signal(signal.SIGTERM)
        for replica in replicas:
            replica.process.terminate(grace=10)
        self.webhook_balancer.stop()
        self.extender_balancer.stop()

    def __enter__(self) -> QosgateStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- objects

    def apply(self, objects: Iterable[Mapping[str, Any]], kubeconfig: Path | None = None) -> str:
        documents = [yaml.safe_dump(dict(o), sort_keys=False) for o in objects]
        if not documents:
            return ""
        stream = "\n---\n".join(documents)
        return self.cp.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=qosgate-tests",
                               "-f", "-", input=stream, kubeconfig=kubeconfig).stdout

    def rendered(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return copy.deepcopy(obj)
        raise KeyError(f"{kind}/{name} is not in manifests/base")

    def webhook_configurations(self) -> list[dict[str, Any]]:
        ca_pem = (self.cert_dir / "ca.crt").read_bytes()
        return [loopback_webhook_configuration(o, self.webhook_balancer.port, ca_pem)
                for o in self.objects if o["kind"] in WEBHOOK_KINDS]

    def register_webhooks(self) -> None:
        self.apply(self.webhook_configurations())

    def wait_for_admission(self, timeout: float = 60) -> None:
        """kube-apiserver picks webhook configurations up asynchronously: probe until a dry-run create of a
        class pod comes back mutated (the validating hooks load alongside)."""
        namespace = self.probe_namespace()

        def mutated() -> bool:
            # scheduler None: in second-scheduler mode the webhook routes it instead of refusing a parked pod.
            response = self.cp.api.post(f"/api/v1/namespaces/{namespace}/pods", params={"dryRun": "All"},
                                        json=class_pod("probe", "gold", scheduler=None))
            return response.status_code == 201 and MEMORY_MIN in (response.json()["metadata"].get("annotations")
                                                                  or {})

        wait_until(mutated, timeout, "kube-apiserver to call qosgate's webhooks", interval=0.25)

    def probe_namespace(self) -> str:
        if not hasattr(self, "_probe_namespace"):
            self._probe_namespace = self.cp.create_namespace("qosgate-probe")
        return self._probe_namespace

    # -- certificates and credentials

    def _generate_certs(self) -> None:
        subprocess.run([*QOSGATE, "certs", "generate", "--out", str(self.cert_dir)], check=True,
                       capture_output=True, text=True, timeout=60)

    def kubeconfig_for(self, service_account: str) -> Path:
        return self.cp.service_account_kubeconfig(SYSTEM_NAMESPACE, service_account,
                                                  expiration_seconds=TOKEN_SECONDS)

    # -- webhook replicas

    def _start_webhook(self, index: int) -> Replica:
        port, health = free_port(), free_port()
        argv = [*QOSGATE, "serve", "webhook", "--kubeconfig", str(self.kubeconfig_for("qosgate-webhook")),
                "--cert-dir", str(self.cert_dir), "--no-generate-certs", "--host", "127.0.0.1",
                "--port", str(port), "--health-port", str(health),
                "--catalog-configmap", f"{SYSTEM_NAMESPACE}/qosgate-classes",
                # As manifests/base/webhook-deployment.yaml.
                "--admin-groups", "qosgate:admins,system:masters",
                "--reservation-ttl", str(self.reservation_ttl),
                "--shutdown-delay", "1", "--graceful-timeout", "5", "--log-format", "text",
                *self.extra_webhook_args]
        name = f"webhook-{index}-{next(self._names)}"
        process = QosgateProcess(name, argv, self.cp.directory / "logs" / f"qosgate-{name}.log", health,
                                 env={"POD_NAME": name})
        return Replica(process.start(), port)

    def restart_webhook(self, index: int, timeout: float = 60) -> Replica:
        old = self.webhooks[index]
        old.process.terminate(grace=5)
        self.webhooks[index] = replica = self._start_webhook(index)
        replica.process.wait_ready(timeout)
        self.sync_balancers()
        return replica

    # -- extender replicas

    def _start_extender(self, index: int) -> Replica:
        port, health = free_port(), free_port()
        argv = [*QOSGATE, "serve", "extender", "--kubeconfig", str(self.kubeconfig_for("qosgate-extender")),
                "--cert-dir", str(self.cert_dir), "--no-generate-certs", "--host", "127.0.0.1",
                "--extender-port", str(port), "--health-port", str(health), "--leader-elect",
                "--reservation-ttl", "30", "--shutdown-delay", "1", "--graceful-timeout", "5",
                "--log-format", "text", *self.extra_extender_args]
        name = f"extender-{index}-{next(self._names)}"
        # POD_NAME is the Lease identity (the Deployment sets it from the downward API); replicas on one
        # host would otherwise share the hostname as identity.
        # POD_IP as the Deployment sets it: the replica advertises https://$POD_IP:<port> on the Lease and
        # followers forward the verbs to the leader (every replica with synced caches is then ready).
        process = QosgateProcess(name, argv, self.cp.directory / "logs" / f"qosgate-{name}.log", health,
                                 env={"POD_NAME": name, "POD_IP": "127.0.0.1"})
        return Replica(process.start(), port)

    def start_extender(self, index: int, timeout: float = 60, wait_ready: bool = False) -> Replica:
        """(Re)start extender replica ``index``; ``wait_ready`` waits for it to hold the Lease."""
        replica = self._start_extender(index)
        if index < len(self.extenders):
            self.extenders[index] = replica
        else:
            self.extenders.append(replica)
        replica.process.wait_alive(timeout)
        if wait_ready:
            replica.process.wait_ready(timeout)
        self.sync_balancers()
        return replica

    # -- node agents

    def start_agent(self, node: str, cgroup_root: Path, proc_root: Path, *, interval: float = 2.0,
                    timeout: float = 60) -> QosgateProcess:
        """``qosgate agent`` for ``node`` with the DaemonSet's arguments (manifests/base/agent-daemonset.yaml),
        on the given cgroup tree and /proc; returns it ready (one pass done, the node's pods listed)."""
        pod = f"qosgate-agent-{node}"
        self.cp.api.post(f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods", json={
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "labels": {"app.kubernetes.io/name": "qosgate",
                                                 "app.kubernetes.io/component": "agent"}},
            "spec": {"serviceAccountName": "qosgate-agent", "nodeName": node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "agent", "image": "registry.invalid/qosgate:1"}]}}).raise_for_status()
        kubeconfig = self.cp.service_account_kubeconfig(AGENT_NAMESPACE, "qosgate-agent", pod=pod,
                                                        expiration_seconds=TOKEN_SECONDS)
        health = free_port()
        argv = [*QOSGATE, "agent", "--node-name", node, "--kubeconfig", str(kubeconfig),
                "--cgroup-root", str(cgroup_root), "--proc-root", str(proc_root),
                "--state-file", str(self.directory / f"agent-{node}-state.json"),
                "--catalog-configmap", f"{SYSTEM_NAMESPACE}/qosgate-classes",
                "--nri-config", "", "--nri-configmap", "",  # no NRI plugin here: the report restricts no class
                "--interval", str(interval), "--report-interval", "5",
                "--health-port", str(health), "--host", "127.0.0.1", "--log-format", "text"]
        name = f"agent-{node}-{next(self._names)}"
        process = QosgateProcess(name, argv, self.cp.directory / "logs" / f"qosgate-{name}.log", health,
                                 env={"NODE_NAME": node, "POD_NAME": pod})
        self.agents[node] = process.start()
        return process.wait_ready(timeout)

    def stop_agent(self, node: str) -> None:
        process = self.agents.pop(node, None)
        if process is not None:
            process.terminate(grace=10)
        self.cp.api.delete(f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods/qosgate-agent-{node}",
                           params={"gracePeriodSeconds": "0"})

    def lease_holder(self) -> str:
        response = self.cp.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NAMESPACE}/leases/"
                                   "qosgate-extender")
        return (response.json().get("spec") or {}).get("holderIdentity") or "" if response.status_code == 200 else ""

    def extender_leader(self) -> Replica | None:
        """The running, ready replica named by the Lease (followers may be ready too: they forward)."""
        holder = self.lease_holder()
        for replica in self.extenders:
            if replica.process.name == holder and replica.process.running and replica.process.ready():
                return replica
        return None

    def wait_for_extender_leader(self, timeout: float = 60, poke: bool = True) -> Replica:
        """Wait until one replica is ready (holds the Lease and caught up).

        A new leader's catch-up barrier opens when its pod watch reaches the API's revision as of winning; on
        a real kube-apiserver a quiet pod watch advances only with pod events or bookmarks (about one a
        minute), so with ``poke`` a throw-away pod write advances it, as any pod waiting to be scheduled does
        in a live cluster.
        """
        last_poke = 0.0

        def ready() -> Replica | None:
            nonlocal last_poke
            leader = self.extender_leader()
            if leader is None:
                return None
            self.extender_balancer.probe_now()
            if self.extender_decides():
                return leader
            if poke and time.monotonic() - last_poke > 1.0:
                last_poke = time.monotonic()
                self.poke_pod_watch()
            return None

        return wait_until(ready, timeout, "an extender replica to hold the Lease and serve", interval=0.2)

    def extender_client(self) -> httpx.Client:
        """HTTPS to the extender Service as kube-scheduler calls it (CA pinned, client certificate)."""
        context = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        context.load_cert_chain(str(self.cert_dir / "client.crt"), str(self.cert_dir / "client.key"))
        return httpx.Client(base_url=self.extender_url, verify=context, timeout=10, trust_env=False)

    def extender_decides(self) -> bool:
        """True when a /filter through the Service is decided (no `Error`: a caught-up leader answered,
        directly or through a follower)."""
        pod = {"metadata": {"name": "probe", "namespace": "default", "uid": "probe"},
               "spec": {"containers": [{"name": "app", "image": "x"}]}}
        try:
            with self.extender_client() as client:
                answer = client.post("/filter", json={"Pod": pod, "NodeNames": []})
        except httpx.HTTPError:
            return False
        return answer.status_code == 200 and not answer.json().get("Error")

    def poke_pod_watch(self) -> None:
        """One pod write (a labels patch on a parked pod): moves every pod watch to the current revision."""
        namespace = self.probe_namespace()
        path = f"/api/v1/namespaces/{namespace}/pods/watch-poke"
        patch = {"metadata": {"labels": {"poke": str(time.monotonic_ns())}}}
        response = self.cp.api.patch(path, json=patch, headers={"Content-Type": "application/merge-patch+json"})
        if response.status_code == 404:
            parked = class_pod("watch-poke", None)
            self.cp.api.post(f"/api/v1/namespaces/{namespace}/pods", json=parked).raise_for_status()

    def lease(self) -> dict[str, Any]:
        return self.cp.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NAMESPACE}/leases/"
                               "qosgate-extender").raise_for_status().json()

    # -- balancers

    def extender_backends(self) -> list[Backend]:
        return [r.backend for r in self.extenders if r.process.running]

    def sync_balancers(self) -> None:
        self.webhook_balancer.set_backends([r.backend for r in self.webhooks if r.process.running])
        self.extender_balancer.set_backends(self.extender_backends())
        self.webhook_balancer.probe_now()
        self.extender_balancer.probe_now()

    extender_url_override: str | None = None  # benchmarks: call one replica directly

    @property
    def extender_url(self) -> str:
        return self.extender_url_override or f"https://127.0.0.1:{self.extender_balancer.port}"

    # -- kube-scheduler

    def scheduler_config(self, *, second: bool = False, prioritize: bool = True,
                         overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        source = SECOND_SCHEDULER_CONFIG if second else SELF_MANAGED_SCHEDULER_CONFIG
        return scheduler_config(source, self.extender_url, self.cert_dir, prioritize=prioritize,
                                overrides=overrides)

    def install_second_scheduler_rbac(self) -> Path:
        """Apply the second-scheduler overlay's ServiceAccount and RBAC; return a kubeconfig for that SA."""
        objects = [o for o in render(SECOND_SCHEDULER_DIR)
                   if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
        self.apply(objects)
        return self.kubeconfig_for("qosgate-scheduler")


# ----------------------------------------------------------------------------------------------- objects


# The scheduler name of pods no scheduler serves: tests' pods stay unbound unless pinned to a node pool (a
# pending pod with the default name would be placed by some later test's scheduler onto that test's nodes).
PARKED = "qosgate-tests-parked"


def class_pod(name: str | None, klass: str | None, *, memory: str = "64Mi", limit: str | None = None,
              scheduler: str | None = PARKED, annotations: Mapping[str, str] | None = None,
              labels: Mapping[str, str] | None = None, container: str = "app") -> dict[str, Any]:
    """A pod asking for ``memory-qos=<klass>`` through the carrier (no class: a plain pod). Parked (see PARKED)
    unless ``scheduler`` names one (None: the apiserver's default) or ``NodePool.pin`` unparks it."""
    metadata: dict[str, Any] = {"labels": dict(labels or {"app": "qos"})}
    if name is None or name.endswith("-"):
        metadata["generateName"] = name or "pod-"
    else:
        metadata["name"] = name
    notes = dict(annotations or {})
    if klass is not None:
        notes[CARRIER] = f"memory-qos={klass}"
    if notes:
        metadata["annotations"] = notes
    resources: dict[str, Any] = {"requests": {"cpu": "10m", "memory": memory}}
    if limit is not None:
        resources["limits"] = {"memory": limit}
    spec: dict[str, Any] = {"containers": [{"name": container, "image": "registry.invalid/app:1",
                                            "resources": resources}]}
    if scheduler is not None:
        spec["schedulerName"] = scheduler
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def quota_configmap(name: str, capacity: int, classes: Sequence[str] = ("gold", "silver", "bronze")) -> dict[str, Any]:
    lines = ["enforcement: deny", "pod:", "- name: memory-qos", "  classes:"]
    for klass in classes:
        lines.append(f"  - {{name: {klass}, capacity: {capacity}}}" if klass == "gold" else f"  - {{name: {klass}}}")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"qosgate.io/quota": "true"}},
            "data": {"quota.yaml": "\n".join(lines) + "\n"}}


# ----------------------------------------------------------------------------------------------- bind audit


@dataclass
class Violation:
    node: str
    pod: str
    protected: int
    protectable: int


class BindAuditor:
    """Watches every pod from now on and checks, after every event that binds a pod, that the node's Σ
    ``qosgate.io/memory-min`` over active pods bound to it stays ≤ its protectable memory (architecture §5.1:
    the ``qosgate.io/protectable-memory`` annotation, else allocatable × ``percent`` / 100).

    Counted independently of qosgate's code: annotation values as written by the webhook (plain bytes),
    Succeeded/Failed pods and deleted pods stop counting. ``extra_counted(pod) -> bytes`` may add what a
    pod's kernel memory.min is besides the annotation (e.g. Guaranteed pods under TieredReservation).
    """

    def __init__(self, control_plane: ControlPlane, percent: int = 90, extra_counted: Any = None):
        self.cp = control_plane
        self.percent = percent
        self.extra_counted = extra_counted
        self.protectable: dict[str, int] = {}
        self.usage: dict[str, int] = {}
        self.pods: dict[str, tuple[str, int]] = {}  # uid → (node, bytes counted)
        self.binds = 0
        self.bind_times: list[float] = []
        self.violations: list[Violation] = []
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self.errors: list[str] = []

    def refresh_nodes(self) -> None:
        from qosgate.core.quantity import parse_quantity

        nodes = self.cp.api.get("/api/v1/nodes").raise_for_status().json()["items"]
        table = {}
        for node in nodes:
            override = (node["metadata"].get("annotations") or {}).get("qosgate.io/protectable-memory")
            allocatable = parse_quantity(node["status"].get("allocatable", {}).get("memory", "0"), "memory")
            table[node["metadata"]["name"]] = (parse_quantity(override, "override") if override is not None
                                               else allocatable * self.percent // 100)
        with self._lock:
            self.protectable = table

    def start(self) -> BindAuditor:
        self.refresh_nodes()
        listing = self.cp.api.get("/api/v1/pods").raise_for_status().json()
        for pod in listing["items"]:
            self._apply(pod, deleted=False, initial=True)
        self._thread = threading.Thread(target=self._watch, args=(listing["metadata"]["resourceVersion"],),
                                        name="bind-auditor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._client is not None:
            self._client.close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> BindAuditor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def counted(self, pod: Mapping[str, Any]) -> int:
        value = (pod["metadata"].get("annotations") or {}).get(MEMORY_MIN)
        amount = int(value) if isinstance(value, str) and value.isdigit() else 0
        if self.extra_counted is not None:
            amount = max(amount, self.extra_counted(pod))
        return amount

    def _apply(self, pod: Mapping[str, Any], deleted: bool, initial: bool = False) -> None:
        uid = pod["metadata"]["uid"]
        node = pod["spec"].get("nodeName") or ""
        active = not deleted and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        with self._lock:
            before = self.pods.pop(uid, None)
            if before is not None:
                self.usage[before[0]] -= before[1]
            if not (active and node):
                return
            amount = self.counted(pod)
            self.pods[uid] = (node, amount)
            self.usage[node] = self.usage.get(node, 0) + amount
            self.peak[node] = max(self.peak.get(node, 0), self.usage[node])
            if before is None and not initial:
                self.binds += 1
                self.bind_times.append(time.monotonic())
            budget = self.protectable.get(node)
            if budget is not None and self.usage[node] > budget and amount:
                self.violations.append(Violation(node, f"{pod['metadata']['namespace']}/{pod['metadata']['name']}",
                                                 self.usage[node], budget))

    def overcommitted_nodes(self) -> list[str]:
        with self._lock:
            return sorted({v.node for v in self.violations})

    def _watch(self, resource_version: str) -> None:
        self._client = self.cp.http()
        self._client.timeout = httpx.Timeout(30, read=None)
        while not self._stop.is_set():
            try:
                with self._client.stream("GET", "/api/v1/pods", params={
                        "watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true"}) as stream:
                    for line in stream.iter_lines():
                        if not line:
                            continue
                        event = orjson.loads(line)
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            self.errors.append(str(obj))
                            return
                        resource_version = obj["metadata"]["resourceVersion"]
                        if kind == "BOOKMARK":
                            continue
                        self._apply(obj, deleted=kind == "DELETED")
            except Exception as error:  # stop() closes the client under the stream: anything goes
                if self._stop.is_set():
                    return
                self.errors.append(repr(error))
                time.sleep(0.2)

    def wait_for_binds(self, count: int, timeout: float) -> None:
        wait_until(lambda: self.binds >= count, timeout, f"{count} binds (seen {self.binds})", interval=0.05)
