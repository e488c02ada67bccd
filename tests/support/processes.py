"""Run `qosgate serve` as a real process for tests, on free loopback ports, until it reports ready."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.tls import eventually


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServedProcess:
    def __init__(self, process: subprocess.Popen[bytes], cert_dir: Path, ports: dict[str, int], log: Path):
        self.process, self.cert_dir, self.ports, self.log = process, cert_dir, ports, log

    def health(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.ports['health']}{path}", timeout=5, trust_env=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class ServeLauncher:
    """Starts `qosgate serve COMPONENT` processes sharing one cert dir; stops them all at the end."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.cert_dir = directory / "certs"
        self.started: list[ServedProcess] = []

    def start(self, *extra: str, component: str = "all", ready_timeout: float = 60,
              env: dict[str, str] | None = None, ports: dict[str, int] | None = None) -> ServedProcess:
        """`ports` pins some of the ports (the rest are free ones); `env` adds to the environment."""
        ports = {"webhook": free_port(), "extender": free_port(), "health": free_port(), **(ports or {})}
        log = self.directory / f"serve-{len(self.started)}.log"
        port_flags = {"webhook": ["--port", str(ports["webhook"])],
                      "extender": ["--port", str(ports["extender"])],
                      "all": ["--port", str(ports["webhook"]), "--extender-port", str(ports["extender"])]}[component]
        command = [sys.executable, "-m", "qosgate.cli.main", "serve", component, "--cert-dir", str(self.cert_dir),
                   "--host", "127.0.0.1", *port_flags, "--health-port", str(ports["health"]), "--shutdown-delay", "1",
                   # The fake apiserver pools idle TLS connections it never reads, so their close_notify is
                   # never answered; bound that wait (kube-apiserver answers it).
                   "--graceful-timeout", "3", *extra]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, **env} if env else None)
        served = ServedProcess(process, self.cert_dir, ports, log)
        self.started.append(served)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"qosgate serve exited {process.returncode}:\n{log.read_text()}")
            try:
                return served.health("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, timeout=ready_timeout)
        return served

    def stop_all(self) -> None:
        for served in self.started:
            served.stop()


@contextlib.contextmanager
def launcher(directory: Path) -> Iterator[ServeLauncher]:
    serve = ServeLauncher(directory)
    try:
        yield serve
    finally:
        serve.stop_all()
