"""A loopback TCP round-robin balancer: what a Service (kube-proxy) does in front of a Deployment's pods.

kube-apiserver calls a webhook at one URL and kube-scheduler an extender at one URL; in a cluster that URL is a
Service whose endpoints are the *ready* replicas. Here the URL is ``https://127.0.0.1:<balancer port>``: every
accepted connection is spliced, byte for byte (TLS passes through untouched, so certificate checks stay end to
end), to the next backend in turn that is ready and accepts a connection. A backend that refuses is skipped for
that connection, as an endpoint that disappeared would be; connections already spliced to a replica stay on it
while it is listed, even when it turns unready — as conntrack keeps them on a pod that left the endpoints — and
are reset when it is removed from the list (the pod is gone).

It runs as its own process (like kube-proxy), so a busy test process never slows the traffic it carries. The
parent writes the endpoints to a JSON file (``set_backends``); the child re-reads it, and probes each backend's
plain-HTTP ``ready_url`` every ``probe_interval`` seconds like a readiness probe feeding the endpoints (no URL:
always ready).

By default it is kinder than kube-proxy, to keep tests fast: endpoints are probed every 0.2 s, one failed probe
removes one, and a refused connection is retried on the next endpoint. ``Probing`` (``set_backends(...,
probing=...)``) makes it as strict as a cluster, for measurements: the Deployment's readiness probe period and
failure threshold, and a connection dealt to an endpoint that refuses is refused to the client (iptables DNAT
picks one endpoint; nothing retries another).

    python -m tests.realcluster.balancer ENDPOINTS_FILE PORT_FILE [PROBE_INTERVAL]
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Probing:
    """How endpoints are kept: a readiness probe every ``period`` seconds, unready after ``failure_threshold``
    failures in a row; ``retry_refused``: a refused connection moves on to the next endpoint."""

    period: float = 0.2
    failure_threshold: int = 1
    retry_refused: bool = True


@dataclass
class Backend:
    port: int
    ready_url: str | None = None  # plain-HTTP readiness endpoint (qosgate's health port /readyz)


class TcpBalancer:
    """Parent side: ``start()`` spawns the child; ``port`` is where clients connect; ``set_backends`` swaps the
    endpoints; ``probe_now()`` waits until the child has re-probed them."""

    def __init__(self, backends: Sequence[Backend] = (), probe_interval: float = 0.2, name: str = "balancer",
                 directory: Path | None = None):
        self.name = name
        self.probe_interval = probe_interval
        self.directory = Path(directory or tempfile.mkdtemp(prefix=f"{name}-"))
        self.endpoints = self.directory / f"{name}.endpoints.json"
        self.port_file = self.directory / f"{name}.port"
        self.status_file = self.directory / f"{name}.status.json"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._write(list(backends))

    def _write(self, backends: list[Backend], probing: Probing | None = None) -> None:
        document = {"backends": [asdict(b) for b in backends], "written": time.time_ns(),
                    "probing": asdict(probing or Probing(period=self.probe_interval))}
        temporary = self.endpoints.with_suffix(".tmp")
        temporary.write_text(json.dumps(document))
        os.replace(temporary, self.endpoints)

    def start(self) -> TcpBalancer:
        self.port_file.unlink(missing_ok=True)
        log = (self.directory / f"{self.name}.log").open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.realcluster.balancer", str(self.endpoints), str(self.port_file),
             str(self.probe_interval)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2], start_new_session=True)
        deadline = time.monotonic() + 20
        while not self.port_file.exists() or not self.port_file.read_text().strip():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"balancer {self.name} did not start; see {log.name}")
            time.sleep(0.05)
        self.port = int(self.port_file.read_text())
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def set_backends(self, backends: Sequence[Backend], probing: Probing | None = None) -> None:
        """Swap the endpoints (and how they are kept: default, the fast test mode)."""
        self._write(list(backends), probing)

    def probe_now(self, timeout: float = 10) -> None:
        """Wait until the child has applied the current endpoints file and probed every backend once since."""
        written = json.loads(self.endpoints.read_text())["written"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if json.loads(self.status_file.read_text()).get("probed_for", 0) >= written:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)

    def ready_ports(self) -> list[int]:
        try:
            return list(json.loads(self.status_file.read_text()).get("ready", []))
        except (OSError, ValueError):
            return []


# ----------------------------------------------------------------------------------------------- child


class _Child:
    def __init__(self, endpoints: Path, status: Path, probe_interval: float):
        self.endpoints, self.status, self.probe_interval = endpoints, status, probe_interval
        self.backends: list[dict[str, object]] = []
        self.probing = Probing(period=probe_interval)
        self.ready: dict[int, bool] = {}
        self.failures: dict[int, int] = {}  # consecutive failed probes per endpoint
        self.written = 0
        self.rotation = itertools.count()
        self.connections: dict[int, set[asyncio.BaseTransport]] = {}

    def _load(self) -> None:
        try:
            document = json.loads(self.endpoints.read_text())
        except (OSError, ValueError):
            return
        self.backends, self.written = document["backends"], document["written"]
        self.probing = Probing(**document.get("probing", {"period": self.probe_interval}))
        # A backend removed from the endpoints is a replica that is gone: its connections die with it.
        listed = {int(b["port"]) for b in self.backends}  # type: ignore[call-overload]
        for port in list(self.connections):
            if port not in listed:
                for transport in self.connections.pop(port):
                    transport.abort()

    @staticmethod
    def _probe(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    async def probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._load()
            written = self.written
            ready = {}
            for backend in self.backends:
                url = backend.get("ready_url")
                port = int(backend["port"])  # type: ignore[call-overload]
                passed = True if not url else await loop.run_in_executor(None, self._probe, url)
                self.failures[port] = 0 if passed else self.failures.get(port, 0) + 1
                # New endpoints start unready until a probe passes; a listed one turns unready only after
                # failure_threshold failures in a row, as the kubelet reports it.
                ready[port] = passed or (self.ready.get(port, False)
                                         and self.failures[port] < self.probing.failure_threshold)
            self.ready = ready
            temporary = self.status.with_suffix(".tmp")
            temporary.write_text(json.dumps({"probed_for": written, "ready": [p for p, ok in ready.items() if ok]}))
            os.replace(temporary, self.status)
            await asyncio.sleep(self.probing.period)

    def candidates(self) -> list[int]:
        ready = [int(b["port"]) for b in self.backends if self.ready.get(int(b["port"]))]  # type: ignore[call-overload]
        if not ready:
            return []
        start = next(self.rotation) % len(ready)
        return ready[start:] + ready[:start]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        candidates = self.candidates()
        if not self.probing.retry_refused:
            candidates = candidates[:1]  # one endpoint is dealt; if it refuses, so does the Service
        for port in candidates:
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
                break
            except (TimeoutError, OSError):
                continue
        if upstream is None:
            writer.transport.abort()  # no endpoint: the client's connection is reset, as with an empty Service
            return
        up_reader, up_writer = upstream
        tracked = self.connections.setdefault(port, set())
        tracked.update((writer.transport, up_writer.transport))
        try:
            await asyncio.gather(_pump(reader, up_writer, writer), _pump(up_reader, writer, up_writer),
                                 return_exceptions=True)
        finally:
            tracked.discard(writer.transport)
            tracked.discard(up_writer.transport)
            for side in (writer, up_writer):
                side.close()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, source_writer: asyncio.StreamWriter) -> None:
    """Copy one direction. EOF is passed on as a half-close; a reset aborts both sides, so a killed replica
    looks killed to its client (not like a clean end of the response)."""
    try:
        while True:
            data = await source.read(65536)
            if not data:
                break
            sink.write(data)
            await sink.drain()
    except (OSError, asyncio.CancelledError):
        for side in (sink, source_writer):
            side.transport.abort()
        return
    try:
        if sink.can_write_eof():
            sink.write_eof()
    except OSError:
        sink.transport.abort()


async def _main(endpoints: Path, port_file: Path, probe_interval: float) -> None:
    child = _Child(endpoints, port_file.with_name(port_file.name.replace(".port", ".status.json")), probe_interval)
    server = await asyncio.start_server(child.handle, "127.0.0.1", 0, backlog=4096)
    prober = asyncio.create_task(child.probe_loop())
    temporary = port_file.with_suffix(".tmp")
    temporary.write_text(str(server.sockets[0].getsockname()[1]))
    os.replace(temporary, port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    prober.cancel()
    server.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.2))
