"""A real, throw-away Kubernetes control plane for tests (modelled on controller-runtime's envtest).

Upstream ``etcd`` + ``kube-apiserver`` (+ ``kube-scheduler`` on demand) run as local processes on loopback,
random free ports, fresh PKI. There is no kubelet, no kube-controller-manager and no kube-proxy.

Binaries (see ``find_binaries``): ``$QOSGATE_CONTROL_PLANE_BIN`` (a folder holding kube-apiserver,
kube-scheduler, etcd and promtool); else, with ``go`` on PATH, ``tests/realcluster/build`` builds them once
into ``.cache/control-plane/<version>/`` (~13 min on 2 cores with a cold Go build cache, ~10 s with a warm
one, ~0.1 s when already built); else ``BinariesUnavailable`` (the fixture skips, or fails when
``QOSGATE_REQUIRE_REAL_CLUSTER=1``).

API (everything else is internal)::

    with ControlPlane(directory).start() as cp:       # or the session fixture `control_plane`
        cp.url, cp.ca_file, cp.admin_kubeconfig, cp.version
        cp.http()                                      # httpx.Client as system:masters admin (base_url=cp.url)
        cp.user_kubeconfig("alice", groups=["dev"])    # x509 client cert signed by the client CA
        cp.user_credentials("alice", ["dev"])          # (kubeconfig, (cert, key)) for cp.http(cert=...)
        cp.service_account_token("ns", "sa", pod="p")  # TokenRequest; bound to the pod (and its node) if given
        cp.service_account_kubeconfig("ns", "sa", pod="p")
        cp.create_namespace("prefix")                  # unique name, with its `default` ServiceAccount
        cp.create_node("n1", cpu="4", memory="8Gi")    # schedulable, Ready, via the status subresource
        with cp.start_scheduler(config) as sched: ...  # KubeSchedulerConfiguration (path/YAML text/dict)
        cp.wait_for_pod_bound("ns", "pod")             # -> node name
        cp.set_pod_phase("ns", "pod", "Running")
        cp.kubectl("get", "pods", "-A")                # CompletedProcess; check=True raises on failure

What running without the other components means (tests must allow for it):

- Namespaces are never finalized: deleting one leaves it ``Terminating`` with all its objects (the namespace
  controller is in kube-controller-manager). Use a fresh namespace per test (``create_namespace``).
- No ``default`` ServiceAccount is made per namespace (serviceaccount controller), and the ServiceAccount
  admission plugin refuses pods without their ServiceAccount: ``create_namespace`` (and ``start`` for
  default, kube-system, kube-public, kube-node-lease) create it. No ``kube-root-ca.crt`` ConfigMaps either.
- The aggregated ClusterRoles ``admin``, ``edit``, ``view`` (and any with an ``aggregationRule``) are created
  EMPTY by the apiserver; the clusterrole-aggregation controller fills them. ``start`` fills them once
  (``aggregate_cluster_roles()``); call it again after adding ``aggregate-to-*`` ClusterRoles (e.g. for CRDs).
- No legacy token Secrets, no garbage collection (ownerReferences are not followed; the apiserver runs with
  ``--enable-garbage-collector=false`` so foreground/orphan deletes do not hang on finalizers), no
  ReplicaSet/Deployment/Job controllers (their pods never appear), no Endpoints/EndpointSlices.
- No node lifecycle controller: the ``TaintNodesByCondition`` admission plugin puts
  ``node.kubernetes.io/not-ready:NoSchedule`` on every new Node and nothing ever removes it, so
  ``create_node`` replaces the taints after creating the node. Nodes never go NotReady/unreachable, and pods on
  a deleted node are not evicted. No kubelet: pods stay ``Pending`` after binding until ``set_pod_phase``.
  kube-scheduler ignores the Ready condition; it needs no untolerated taint, ``spec.unschedulable`` unset and
  ``status.allocatable`` cpu/memory/pods (a bare Node fails with "Insufficient memory, Too many pods").
- ServiceAccount tokens from TokenRequest are the only SA tokens; a token bound to a Pod that is bound to a
  node carries the node in its JWT (``kubernetes.io.node``) and authenticates with user.extra
  ``authentication.kubernetes.io/node-name`` / ``node-uid`` besides ``pod-name``/``pod-uid``/``credential-id``
  (ServiceAccountTokenPodNodeInfo, GA and locked on since 1.32; checked by test_controlplane.py).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.realcluster.pki import CertificateAuthority, write_key_pair

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build"
VERSIONS_FILE = HERE / "versions"
BINARIES = ("kube-apiserver", "kube-scheduler", "etcd", "promtool")
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
LOG_TAIL_LINES = 60


class BinariesUnavailable(Exception):
    """The control-plane binaries cannot be found or built; the message says why (used as the skip reason)."""


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.stdout}"


class StartupError(RuntimeError):
    """A component did not come up; the message ends with the tail of its log."""


# ----------------------------------------------------------------------------------------------- binaries


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """The KEY=value pairs of tests/realcluster/versions."""
    versions = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip().strip("'\"")
    return versions


def _check_folder(folder: Path, origin: str) -> Path:
    missing = [name for name in BINARIES if not os.access(folder / name, os.X_OK)]
    if missing:
        raise BinariesUnavailable(f"{origin} {folder} lacks executable {', '.join(missing)}")
    return folder


def find_binaries(build_log: Path | None = None, build_timeout: float = 3600) -> Path:
    """The folder holding the four binaries; builds them with tests/realcluster/build when ``go`` is available."""
    configured = os.environ.get("QOSGATE_CONTROL_PLANE_BIN")
    if configured:
        return _check_folder(Path(configured), "QOSGATE_CONTROL_PLANE_BIN")
    if shutil.which("go") is None:
        raise BinariesUnavailable("no control-plane binaries: set QOSGATE_CONTROL_PLANE_BIN to a folder with "
                                  f"{', '.join(BINARIES)}, or put `go` on PATH so {BUILD_SCRIPT} can build them")
    log = build_log or Path(tempfile.mkstemp(prefix="control-plane-build-", suffix=".log")[1])
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as err:
        try:
            done = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=err, timeout=build_timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise BinariesUnavailable(f"{BUILD_SCRIPT} took over {build_timeout:.0f}s; log: {log}") from None
    if done.returncode != 0:
        raise BinariesUnavailable(f"{BUILD_SCRIPT} failed (exit {done.returncode}); log {log}:\n{_tail(log)}")
    lines = done.stdout.decode().strip().splitlines()
    if not lines:
        raise BinariesUnavailable(f"{BUILD_SCRIPT} printed no folder; log {log}:\n{_tail(log)}")
    return _check_folder(Path(lines[-1]), f"{BUILD_SCRIPT} output")


# ----------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(no log: {error})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector against a label map (empty matches everything, as LabelSelectorAsSelector)."""
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for expression in expressions:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if operator == "In":
            ok = present and labels[key] in values
        elif operator == "NotIn":
            ok = not present or labels[key] not in values
        elif operator == "Exists":
            ok = present
        elif operator == "DoesNotExist":
            ok = not present
        else:
            raise ValueError(f"unknown label selector operator {operator!r}")
        if not ok:
            return False
    return True


class _Process:
    """One child process with its log file; stop() is SIGTERM, then SIGKILL after ``grace`` seconds."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None):
        self.name, self.argv, self.log = name, list(argv), log
        self.env = dict(env) if env is not None else None
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n===== {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          env=None if self.env is None else {**os.environ, **self.env})

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_running(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise StartupError(f"{self.name} exited with {self.popen.returncode}; last lines of {self.log}:\n"
                               f"{self.tail()}")

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log, lines)

    def stop(self, grace: float = 10) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None


def _start_on_free_ports(process_for: Callable[[], _Process], ready: Callable[[_Process], bool],
                         timeout: float, attempts: int = 3) -> _Process:
    """Start a process whose ports are picked by ``process_for``; retry on a lost port race."""
    for attempt in range(attempts):
        process = process_for()
        process.start()
        deadline = time.monotonic() + timeout
        try:
            while not ready(process):
                process.check_running()
                if time.monotonic() > deadline:
                    raise StartupError(f"{process.name} not ready after {timeout:.0f}s; last lines of "
                                       f"{process.log}:\n{process.tail()}")
                time.sleep(0.1)
            return process
        except StartupError:
            process.stop(grace=5)
            if attempt + 1 < attempts and "address already in use" in process.tail(200):
                continue
            raise
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------- scheduler


class Scheduler:
    """A kube-scheduler process: ``stop()``, ``restart()``, ``port``, ``log``; a context manager that stops it."""

    def __init__(self, control_plane: ControlPlane, config: Path, leader_elect: bool, extra_args: Sequence[str],
                 name: str, kubeconfig: Path | None = None):
        self.control_plane, self.config, self.leader_elect = control_plane, config, leader_elect
        self.kubeconfig = kubeconfig or control_plane._scheduler_kubeconfig
        self.extra_args, self.name = list(extra_args), name
        self.log = control_plane.directory / "logs" / f"{name}.log"
        self.port = 0
        self._process: _Process | None = None

    def _make(self) -> _Process:
        self.port = free_port()
        kubeconfig = self.kubeconfig
        argv = [str(self.control_plane.binaries / "kube-scheduler"), f"--config={self.config}",
                f"--leader-elect={str(self.leader_elect).lower()}", "--bind-address=127.0.0.1",
                f"--secure-port={self.port}", f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}", "--v=2", *self.extra_args]
        return _Process(self.name, argv, self.log)

    def _ready(self, _process: _Process) -> bool:
        try:
            response = httpx.get(f"https://127.0.0.1:{self.port}/healthz", verify=False, timeout=2, trust_env=False)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def start(self, timeout: float = 60) -> Scheduler:
        if self._process is None or not self._process.running:
            self._process = _start_on_free_ports(self._make, self._ready, timeout)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def restart(self, timeout: float = 60) -> Scheduler:
        self.stop()
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        popen = self._process.popen if self._process is not None else None
        return popen.pid if popen is not None else None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log, lines)

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------- control plane


class ControlPlane:
    """etcd + kube-apiserver (+ kube-scheduler on demand) on loopback. See the module docstring."""

    def __init__(self, directory: Path | None = None, binaries: Path | None = None, *,
                 apiserver_args: Sequence[str] = (), etcd_args: Sequence[str] = ()):
        self.directory = Path(directory or tempfile.mkdtemp(prefix="control-plane-")).resolve()
        self._binaries = binaries
        self.apiserver_args, self.etcd_args = list(apiserver_args), list(etcd_args)
        self.url = ""
        self.version: dict[str, str] = {}
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._schedulers: list[Scheduler] = []
        self._names = itertools.count()
        self._client: httpx.Client | None = None

    # -- lifecycle

    @property
    def binaries(self) -> Path:
        if self._binaries is None:
            self._binaries = find_binaries(self.directory / "logs" / "build.log")
        return self._binaries

    def start(self, timeout: float = 90) -> ControlPlane:
        try:
            self._make_pki()
            self._start_etcd(timeout)
            self._start_apiserver(timeout)
            self._bootstrap(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop schedulers, apiserver, etcd (SIGTERM, then SIGKILL); logs stay under ``directory/logs``."""
        for scheduler in self._schedulers:
            scheduler.stop()
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._apiserver is not None:
            self._apiserver.stop(grace=15)
        if self._etcd is not None:
            self._etcd.stop()
        shutil.rmtree(self.directory / "etcd-data", ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pids(self) -> dict[str, int]:
        """Process ids of etcd and kube-apiserver (benchmarks read their CPU time)."""
        found = {}
        for name, process in (("etcd", self._etcd), ("kube-apiserver", self._apiserver)):
            if process is not None and process.popen is not None:
                found[name] = process.popen.pid
        return found

    def logs(self) -> dict[str, Path]:
        return {path.stem: path for path in sorted((self.directory / "logs").glob("*.log"))}

    # -- PKI, etcd, apiserver

    def _make_pki(self) -> None:
        pki = self.directory / "pki"
        self.server_ca = CertificateAuthority.create(pki, "server-ca")
        self.client_ca = CertificateAuthority.create(pki, "client-ca")
        self.serving = self.server_ca.issue(pki / "apiserver", "kube-apiserver",
                                            server_names=("127.0.0.1", "localhost", "::1"))
        self.sa_public, self.sa_private = write_key_pair(pki / "service-account")
        self.ca_file = self.server_ca.cert_file
        self._admin = self.client_ca.issue(pki / "users" / "admin", "qosgate-test-admin",
                                           organizations=("system:masters",), client=True)

    def _start_etcd(self, timeout: float) -> None:
        data = self.directory / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)

        def make() -> _Process:
            self._etcd_port, peer = free_port(), free_port()
            client_url, peer_url = f"http://127.0.0.1:{self._etcd_port}", f"http://127.0.0.1:{peer}"
            argv = [str(self.binaries / "etcd"), f"--data-dir={data}", "--name=default",
                    f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
                    f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=default={peer_url}", "--unsafe-no-fsync", "--log-level=warn",
                    *self.etcd_args]
            return _Process("etcd", argv, self.directory / "logs" / "etcd.log")

        def ready(_process: _Process) -> bool:
            try:
                response = httpx.get(f"http://127.0.0.1:{self._etcd_port}/readyz", timeout=2, trust_env=False)
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        self._etcd = _start_on_free_ports(make, ready, timeout)

    def _start_apiserver(self, timeout: float) -> None:
        def make() -> _Process:
            self.port = free_port()
            self.url = f"https://127.0.0.1:{self.port}"
            argv = [
                str(self.binaries / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self._etcd_port}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
                f"--tls-cert-file={self.serving.cert_file}", f"--tls-private-key-file={self.serving.key_file}",
                f"--cert-dir={self.directory / 'apiserver-certs'}",
                f"--client-ca-file={self.client_ca.cert_file}",
                "--authorization-mode=RBAC",
                # The defaults already hold these three; naming them keeps them on if the defaults change.
                "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook,"
                "ValidatingAdmissionPolicy",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={self.sa_public}",
                f"--service-account-signing-key-file={self.sa_private}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # Light: no kube-controller-manager runs, so no GC finalizers; no pprof; no APF queueing.
                "--enable-garbage-collector=false", "--profiling=false", "--enable-priority-and-fairness=false",
                "--endpoint-reconciler-type=none", "--event-ttl=10m",
                "--v=1",
                *self.apiserver_args,
            ]
            return _Process("kube-apiserver", argv, self.directory / "logs" / "kube-apiserver.log")

        def ready(_process: _Process) -> bool:
            try:
                response = self._admin_client().get("/readyz", timeout=2)
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        self._apiserver = _start_on_free_ports(make, ready, timeout)
        self.admin_kubeconfig = self._write_kubeconfig("admin", self._cert_user(self._admin))
        self._scheduler_kubeconfig = self.user_kubeconfig("system:kube-scheduler")

    def _admin_client(self) -> httpx.Client:
        if self._client is None or str(self._client.base_url).rstrip("/") != self.url:
            if self._client is not None:
                self._client.close()
            self._client = self.http()
        return self._client

    def _bootstrap(self, timeout: float) -> None:
        self.version = self._admin_client().get("/version").raise_for_status().json()
        for namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
            # The apiserver creates these namespaces shortly after it is ready.
            wait_until(lambda ns=namespace: self._ensure_service_account(ns), timeout, f"namespace {namespace}")
        self.aggregate_cluster_roles()

    def aggregate_cluster_roles(self) -> list[str]:
        """Do the clusterrole-aggregation controller's job once: fill the rules of every ClusterRole with an
        ``aggregationRule`` (admin, edit, view, ...) from the ClusterRoles its selectors match. ``start`` calls
        it; call it again after creating ClusterRoles labelled ``rbac.authorization.k8s.io/aggregate-to-*``.
        Returns the names of the roles it changed."""
        changed: list[str] = []
        for _ in range(5):  # aggregated roles aggregate each other (view -> edit -> admin): repeat to a fixpoint
            roles = self.api.get("/apis/rbac.authorization.k8s.io/v1/clusterroles").raise_for_status().json()["items"]
            changed_now = False
            for role in roles:
                selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
                if not selectors:
                    continue
                rules: list[dict[str, Any]] = []
                for source in sorted(roles, key=lambda r: r["metadata"]["name"]):
                    if source["metadata"]["name"] == role["metadata"]["name"]:
                        continue
                    labels = source["metadata"].get("labels") or {}
                    if any(_selector_matches(selector, labels) for selector in selectors):
                        rules.extend(rule for rule in source.get("rules") or [] if rule not in rules)
                if rules != (role.get("rules") or []):
                    role["rules"] = rules
                    self.api.put(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role['metadata']['name']}",
                                 json=role).raise_for_status()
                    changed.append(role["metadata"]["name"])
                    changed_now = True
            if not changed_now:
                break
        return sorted(set(changed))

    def _ensure_service_account(self, namespace: str, name: str = "default") -> bool:
        response = self._admin_client().post(f"/api/v1/namespaces/{namespace}/serviceaccounts",
                                             json={"metadata": {"name": name}})
        if response.status_code == 404:  # the namespace is not there yet
            return False
        if response.status_code not in (201, 409):
            response.raise_for_status()
        return True

    # -- clients and credentials

    def http(self, cert: tuple[Path, Path] | None = None, token: str | None = None,
             limits: httpx.Limits | None = None) -> httpx.Client:
        """An httpx client for the apiserver: admin (system:masters) unless a client cert or token is given."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if token is None:
            cert_file, key_file = cert or (self._admin.cert_file, self._admin.key_file)
            context.load_cert_chain(str(cert_file), str(key_file))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, verify=context, headers=headers, timeout=30, trust_env=False,
                            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=20))

    @property
    def api(self) -> httpx.Client:
        """The shared admin client (do not close it)."""
        return self._admin_client()

    def _cert_user(self, issued: Any) -> dict[str, str]:
        return {"client-certificate-data": _b64(issued.cert_pem), "client-key-data": _b64(issued.key_pem)}

    def _write_kubeconfig(self, name: str, user: Mapping[str, str]) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url,
                                                      "certificate-authority-data": _b64(self.server_ca.cert_pem)}}],
            "users": [{"name": name, "user": dict(user)}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": name}}],
        }
        path = self.directory / "kubeconfigs" / f"{name.replace(':', '_').replace('/', '_')}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(config, out, indent=1)  # JSON is YAML: kubectl and the kubernetes client both read it
        return path

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating as ``user`` in ``groups`` with a client cert from the client CA."""
        return self.user_credentials(user, groups)[0]

    def user_credentials(self, user: str, groups: Sequence[str] = ()) -> tuple[Path, tuple[Path, Path]]:
        """(kubeconfig, (cert file, key file)) for ``user`` in ``groups``: ``http(cert=...)`` takes the pair."""
        stem = self.directory / "pki" / "users" / f"{user.replace(':', '_')}-{next(self._names)}"
        issued = self.client_ca.issue(stem, user, organizations=tuple(groups), client=True)
        kubeconfig = self._write_kubeconfig(f"{user}-{stem.name}", self._cert_user(issued))
        return kubeconfig, (issued.cert_file, issued.key_file)

    def service_account_token(self, namespace: str, name: str, *, pod: str | None = None,
                              audiences: Sequence[str] = (), expiration_seconds: int = 3600) -> str:
        """A TokenRequest token. With ``pod`` it is bound to that Pod (and, when the pod has a node, carries it)."""
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        if pod is not None:
            uid = self.api.get(f"/api/v1/namespaces/{namespace}/pods/{pod}").raise_for_status().json()
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid["metadata"]["uid"]}
        response = self.api.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                                 json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                       "spec": spec})
        return response.raise_for_status().json()["status"]["token"]

    def service_account_kubeconfig(self, namespace: str, name: str, *, pod: str | None = None,
                                   audiences: Sequence[str] = (), expiration_seconds: int = 3600) -> Path:
        token = self.service_account_token(namespace, name, pod=pod, audiences=audiences,
                                           expiration_seconds=expiration_seconds)
        return self._write_kubeconfig(f"sa-{namespace}-{name}-{next(self._names)}", {"token": token})

    # -- objects

    def create_namespace(self, prefix: str = "test", labels: Mapping[str, str] | None = None) -> str:
        """A new namespace named ``<prefix>-<random>`` with its ``default`` ServiceAccount; returns the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.api.post("/api/v1/namespaces",
                      json={"metadata": {"name": name, "labels": dict(labels or {})}}).raise_for_status()
        self._ensure_service_account(name)
        return name

    def create_node(self, name: str, *, cpu: str = "4", memory: str = "8Gi", pods: int = 110,
                    labels: Mapping[str, str] | None = None, taints: Sequence[Mapping[str, str]] = (),
                    extra_allocatable: Mapping[str, str] | None = None, ready: bool = True) -> dict[str, Any]:
        """A Node as a kubelet would register it: labels, allocatable = capacity, Ready condition (via the
        status subresource). The not-ready taint that admission adds is replaced by ``taints``."""
        node_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                       **(labels or {})}
        created = self.api.post("/api/v1/nodes", json={"metadata": {"name": name, "labels": node_labels}})
        created.raise_for_status()
        # TaintNodesByCondition admission added node.kubernetes.io/not-ready:NoSchedule; only the (absent)
        # node lifecycle controller would lift it.
        self.api.patch(f"/api/v1/nodes/{name}", json={"spec": {"taints": [dict(t) for t in taints] or None}},
                       headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
        resources = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "100Gi",
                     **(extra_allocatable or {})}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        def condition(kind: str, status: str, reason: str) -> dict[str, str]:
            return {"type": kind, "status": status, "reason": reason, "message": "set by the test control plane",
                    "lastHeartbeatTime": now, "lastTransitionTime": now}

        status = {
            "capacity": resources, "allocatable": resources,
            "conditions": [condition("Ready", "True" if ready else "False", "KubeletReady" if ready else "Test"),
                           condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                           condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                           condition("PIDPressure", "False", "KubeletHasSufficientPID")],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion":
                         self.version.get("gitVersion", ""), "containerRuntimeVersion": "none://0",
                         "kernelVersion": "", "osImage": "", "machineID": "", "systemUUID": "", "bootID": "",
                         "kubeProxyVersion": ""},
        }
        response = self.api.patch(f"/api/v1/nodes/{name}/status", json={"status": status},
                                  headers={"Content-Type": "application/merge-patch+json"})
        return response.raise_for_status().json()

    def wait_for_pod_bound(self, namespace: str, name: str, timeout: float = 30) -> str:
        """Wait until the pod has ``spec.nodeName``; return it. On timeout, say why the scheduler did not bind."""
        last: dict[str, Any] = {}

        def bound() -> str:
            nonlocal last
            response = self.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
            if response.status_code == 404:
                return ""
            last = response.raise_for_status().json()
            return last["spec"].get("nodeName", "")

        try:
            return wait_until(bound, timeout, f"pod {namespace}/{name} to be bound", interval=0.2)
        except TimeoutError as error:
            conditions = last.get("status", {}).get("conditions", [])
            running = [s for s in self._schedulers if s.running]
            hint = (f"\nscheduler {running[-1].name} log tail:\n{running[-1].tail(30)}" if running
                    else "\n(no kube-scheduler is running)")
            raise TimeoutError(f"{error}; pod conditions: {conditions}{hint}") from None

    def set_pod_phase(self, namespace: str, name: str, phase: str, *, ready: bool | None = None) -> dict[str, Any]:
        """Set ``status.phase`` (as a kubelet would) through the status subresource; ``ready`` sets the
        Ready/ContainersReady conditions too (default: True for Running, else False)."""
        ready = (phase == "Running") if ready is None else ready
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        value = "True" if ready else "False"
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": [{"type": kind, "status": value, "lastTransitionTime": now}
                           for kind in ("Ready", "ContainersReady")] +
                          [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
        }
        if phase == "Running":
            status["startTime"] = now
        # Strategic merge patch merges conditions by type, keeping what the scheduler wrote.
        response = self.api.patch(f"/api/v1/namespaces/{namespace}/pods/{name}/status", json={"status": status},
                                  headers={"Content-Type": "application/strategic-merge-patch+json"})
        return response.raise_for_status().json()

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run kubectl (from PATH) against this cluster; admin unless ``kubeconfig`` is given."""
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise FileNotFoundError("kubectl is not on PATH")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.admin_kubeconfig)}
        done = subprocess.run([kubectl, *args], input=input, capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise KubectlError(done.returncode, done.args, done.stdout, done.stderr)
        return done

    # -- scheduler

    def start_scheduler(self, config: Path | str | Mapping[str, Any] | None = None, *, leader_elect: bool = False,
                        extra_args: Sequence[str] = (), timeout: float = 60,
                        kubeconfig: Path | None = None) -> Scheduler:
        """Start a kube-scheduler with ``config`` (a KubeSchedulerConfiguration as a file path, YAML text or dict;
        default: the default profile). The fixture sets ``clientConnection.kubeconfig`` (``kubeconfig``, default
        user system:kube-scheduler; also used for delegated authn/authz) and ``leaderElection.leaderElect``;
        everything else is the caller's."""
        if config is None:
            document: dict[str, Any] = {}
        elif isinstance(config, Path):
            document = yaml.safe_load(config.read_text()) or {}
        elif isinstance(config, str):
            document = yaml.safe_load(config) or {}
        else:
            document = json.loads(json.dumps(config))
        document.setdefault("apiVersion", "kubescheduler.config.k8s.io/v1")
        document.setdefault("kind", "KubeSchedulerConfiguration")
        document.setdefault("clientConnection", {})["kubeconfig"] = str(kubeconfig or self._scheduler_kubeconfig)
        document.setdefault("leaderElection", {})["leaderElect"] = leader_elect
        name = f"kube-scheduler-{next(self._names)}"
        path = self.directory / "scheduler" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        scheduler = Scheduler(self, path, leader_elect, extra_args, name, kubeconfig)
        self._schedulers.append(scheduler)
        return scheduler.start(timeout)
