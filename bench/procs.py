"""The processes a benchmark measures: `qosgate serve …` as a user runs it, the null baseline served the same
way (bench/nullserve.py), the fake kube-apiserver in a side process; plus their CPU and memory from /proc.

Every process gets free loopback ports and a plain health port; "started" means its /readyz answered 200
(for the extender in cluster mode: caches synced), and the time that took is kept (`ready_seconds`).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_HOSTNAME = "qosgate-webhook.qosgate-system.svc"
EXTENDER_HOSTNAME = "qosgate-extender.qosgate-system.svc"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certs(directory: Path) -> Path:
    """What `qosgate serve --local` generates: one serving pair for both services, plus the client pair."""
    from qosgate.certs.generate import ensure_certificates, ensure_client_certificate, service_dns_names

    ensure_certificates(directory, "qosgate-webhook", "qosgate-system",
                        extra_sans=service_dns_names("qosgate-extender", "qosgate-system"))
    ensure_client_certificate(directory)
    return directory


@dataclass
class Proc:
    """A started process and what the benchmark reads from it."""

    name: str
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path
    ready_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all threads) so far."""
        with open(f"/proc/{self.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE

    def peak_rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def health(self, path: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.ports["health"], timeout=10)
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        finally:
            connection.close()

    def wait_ready(self, timeout: float) -> None:
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited {self.process.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                if self.health("/readyz") == 200:
                    self.ready_seconds = time.monotonic() - started
                    return
            except OSError:
                pass
            if time.monotonic() - started > timeout:
                raise SystemExit(f"{self.name} not ready after {timeout:.0f}s:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _spawn(name: str, command: list[str], ports: dict[str, int], workdir: Path, ready_timeout: float,
           env: dict[str, str] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    proc = Proc(name, process, ports, log)
    try:
        proc.wait_ready(ready_timeout)
    except BaseException:
        proc.stop()
        raise
    return proc


def serve_qosgate(component: str, cert_dir: Path, workdir: Path, *extra: str, ready_timeout: float = 60) -> Proc:
    """`qosgate serve COMPONENT` exactly as a user starts it (plus loopback ports and quiet logs)."""
    ports = {"webhook": free_port(), "extender": free_port(), "health": free_port()}
    port_flags = {"webhook": ["--port", str(ports["webhook"])], "extender": ["--port", str(ports["extender"])],
                  "all": ["--port", str(ports["webhook"]), "--extender-port", str(ports["extender"])]}[component]
    command = [sys.executable, "-m", "qosgate.cli.main", "serve", component, "--cert-dir", str(cert_dir),
               "--host", "127.0.0.1", *port_flags, "--health-port", str(ports["health"]),
               "--shutdown-delay", "0", "--graceful-timeout", "2", "--log-level", "warning", *extra]
    return _spawn(f"qosgate-{component}", command, ports, workdir, ready_timeout)


def serve_null(cert_dir: Path, workdir: Path, components: Iterable[str] = ("webhook", "extender")) -> Proc:
    """The null baseline (bench/nullserve.py): qosgate.serving exactly as `qosgate serve` builds it."""
    ports = {name: free_port() for name in components}
    ports["health"] = free_port()
    command = [sys.executable, "-m", "bench.nullserve", "--cert-dir", str(cert_dir),
               *[arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]]
    return _spawn("null", command, ports, workdir, 60)


def bare_tls(cert_dir: Path, workdir: Path, body: bytes) -> Proc:
    """A bare TLS server with TCP_NODELAY answering `body` in one write: the floor of a keep-alive round trip."""
    ports = {"bare": free_port(), "health": free_port()}
    body_file = workdir / "bare-body"
    body_file.write_bytes(body)
    command = [sys.executable, "-m", "bench.nullserve", "--bare", str(body_file), "--cert-dir", str(cert_dir),
               "--bare-port", str(ports["bare"]), "--health-port", str(ports["health"])]
    return _spawn("bare", command, ports, workdir, 60)


def fake_api(workdir: Path, seeder: str, *args: str, ready_timeout: float = 600) -> Proc:
    """tests/fakeapi's server in a side process, seeded by `seeder` ("module:function" returning objects)."""
    ports = {"health": free_port()}
    kubeconfig = workdir / "kubeconfig"
    command = [sys.executable, "-m", "bench.procs", "fake-api", str(kubeconfig), str(ports["health"]), seeder, *args]
    proc = _spawn("fake-api", command, ports, workdir, ready_timeout)
    proc.info["kubeconfig"] = str(kubeconfig)
    return proc


def _run_fake_api(kubeconfig: str, health_port: int, seeder: str, args: list[str]) -> None:
    """Child: seed the fake API, write the kubeconfig, answer /readyz on `health_port`, serve until SIGTERM."""
    import importlib
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from tests.fakeapi import FakeAPIServer

    module, function = seeder.split(":")
    objects = getattr(importlib.import_module(module), function)(*args)
    api = FakeAPIServer().start()
    started = time.perf_counter()
    api.seed(objects)
    print(f"fake API seeded in {time.perf_counter() - started:.1f}s", flush=True)
    api.write_kubeconfig(kubeconfig + ".tmp", token="admin")
    os.replace(kubeconfig + ".tmp", kubeconfig)

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    health = HTTPServer(("127.0.0.1", health_port), Ready)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    api.stop()


@contextmanager
def processes() -> Iterator[ExitStack]:
    """Stops every process registered with ``stack.callback(proc.stop)`` at the end, newest first."""
    with ExitStack() as stack:
        yield stack


def cpu_per_request(proc: Proc, before: float, requests: int) -> float:
    return (proc.cpu_seconds() - before) / max(requests, 1)


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "fake-api":
        _run_fake_api(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:])
    else:
        raise SystemExit("usage: python -m bench.procs fake-api KUBECONFIG HEALTH_PORT MODULE:FUNCTION [ARGS…]")
