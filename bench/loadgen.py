"""HTTPS load for the benchmarks, generated in worker processes on uvloop (closed loop, open loop, sequential).

httpx costs hundreds of µs per request on the client side and would measure itself; the workers speak
minimal HTTP/1.1 keep-alive over uvloop TLS streams, each in its own process, so the server is what gets
measured. Every result carries the CPU the load generator itself spent (``cpu_seconds``, summed over its
processes) and how busy that made its processes (``busy``: CPU / (wall × processes)); a benchmark prints a
warning when the generator, not the server, was the bottleneck.

    with LoadGen(processes=1) as load:
        result = load.closed(target, "/mutate", bodies, connections=50, requests=20_000)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import ssl
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

SATURATED = 0.85  # a generator process busier than this may be what limits the figures


@dataclass(frozen=True)
class Target:
    """Where to send: loopback port, the CA to verify against, the name to verify, an optional client pair."""

    port: int
    ca_file: str
    server_hostname: str
    cert_file: str | None = None
    key_file: str | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass
class Result:
    requests: int
    seconds: float
    latencies: list[float]
    errors: int
    cpu_seconds: float = 0.0  # load generator CPU, all its processes
    processes: int = 1
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def busy(self) -> float:
        """Fraction of its processes' wall time the generator spent on CPU."""
        return self.cpu_seconds / (self.seconds * self.processes) if self.seconds else 0.0

    @property
    def saturated(self) -> bool:
        return self.busy > SATURATED

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")

    def line(self, label: str) -> str:
        errors = f"  errors {self.errors} {dict(self.statuses)}" if self.errors else ""
        return (f"{label:<30} {self.throughput:8.0f} req/s  p50 {self.percentile(50) * 1e3:6.2f}  "
                f"p99 {self.percentile(99) * 1e3:6.2f}  p99.9 {self.percentile(99.9) * 1e3:6.2f} ms  "
                f"loadgen CPU {self.busy:4.0%}{errors}")

    @staticmethod
    def merge(parts: Sequence[Result]) -> Result:
        statuses: dict[int, int] = {}
        for part in parts:
            for status, count in part.statuses.items():
                statuses[status] = statuses.get(status, 0) + count
        return Result(sum(p.requests for p in parts), max(p.seconds for p in parts),
                      [x for p in parts for x in p.latencies], sum(p.errors for p in parts),
                      sum(p.cpu_seconds for p in parts), len(parts), statuses)


# --- the wire ------------------------------------------------------------------------------------------------

def request_bytes(path: str, body: bytes, host: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _connect(target: Target, context: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port, ssl=context,
                                                   server_hostname=target.server_hostname, limit=1 << 24)
    return reader, writer


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> int:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(head[9:12])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Tally:
    """Latencies and statuses; wall and CPU time from `start()` (after the connections are open) to `stop()`."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.statuses: dict[int, int] = {}
        self.seconds = self.cpu = 0.0

    def start(self) -> None:
        self.seconds, self.cpu = time.perf_counter(), _cpu()

    def stop(self) -> None:
        self.seconds, self.cpu = time.perf_counter() - self.seconds, _cpu() - self.cpu

    def record(self, status: int, seconds: float) -> None:
        self.latencies.append(seconds)
        if status != 200:
            self.errors += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1


async def _closed(target: Target, path: str, bodies: list[bytes], connections: int, requests: int) -> _Tally:
    context = target.context()
    payloads = [request_bytes(path, b, target.server_hostname) for b in bodies]
    opened = [await _connect(target, context) for _ in range(connections)]
    tally = _Tally()
    counter = iter(range(requests))

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in counter:
            started = time.perf_counter()
            status = await _one(reader, writer, payloads[i % len(payloads)])
            tally.record(status, time.perf_counter() - started)

    tally.start()
    await asyncio.gather(*(worker(r, w) for r, w in opened))
    tally.stop()
    for _, writer in opened:
        writer.close()
    return tally


async def _open(target: Target, path: str, bodies: list[bytes], rate: float, seconds: float,
                connections: int) -> _Tally:
    """Requests arrive at a fixed `rate` whatever the answers (as from many apiserver goroutines); each
    latency runs from the scheduled arrival, so waiting for a free connection counts."""
    context = target.context()
    payloads = [request_bytes(path, b, target.server_hostname) for b in bodies]
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await _connect(target, context))
    tally = _Tally()
    total = int(rate * seconds)

    async def send(i: int, scheduled: float) -> None:
        reader, writer = await pool.get()
        try:
            status = await _one(reader, writer, payloads[i % len(payloads)])
        finally:
            pool.put_nowait((reader, writer))
        tally.record(status, time.perf_counter() - scheduled)

    tasks = []
    tally.start()
    started = time.perf_counter()
    for i in range(total):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i, scheduled)))
    await asyncio.gather(*tasks)
    tally.stop()
    while not pool.empty():
        pool.get_nowait()[1].close()
    return tally


def _run(kind: str, target: Target, path: str, bodies: list[bytes], params: dict[str, float],
         start_at: float) -> Result:
    """One worker process's share, on uvloop; time and CPU (user + system) exclude opening the connections."""
    import uvloop

    delay = start_at - time.time()
    if delay > 0:  # every worker starts together, so their wall times overlap
        time.sleep(delay)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if kind == "closed":
            tally = runner.run(_closed(target, path, bodies, int(params["connections"]), int(params["requests"])))
        else:
            tally = runner.run(_open(target, path, bodies, params["rate"], params["seconds"],
                                     int(params["connections"])))
    return Result(len(tally.latencies), tally.seconds, tally.latencies, tally.errors, tally.cpu, 1, tally.statuses)


def _warm() -> None:
    import uvloop  # noqa: F401  (imported once per worker, not inside a measurement)


class LoadGen:
    """A pool of load-generating processes, kept for a whole benchmark (imports and start-up paid once)."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        for future in [self._pool.submit(_warm) for _ in range(processes)]:
            future.result()

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _spread(self, kind: str, target: Target, path: str, bodies: list[bytes], params: dict[str, float],
                split: tuple[str, ...], processes: int | None) -> Result:
        count = min(processes or self.processes, self.processes)
        share = {key: (params[key] / count if key in split else params[key]) for key in params}
        start_at = time.time() + 0.2
        futures: list[Future[Result]] = [self._pool.submit(_run, kind, target, path, bodies, share, start_at)
                                         for _ in range(count)]
        return Result.merge([f.result() for f in futures])

    def closed(self, target: Target, path: str, bodies: list[bytes], *, connections: int, requests: int,
               processes: int | None = None) -> Result:
        """`connections` keep-alive connections, each sending back-to-back, `requests` in all."""
        count = min(processes or self.processes, self.processes, connections)
        return self._spread("closed", target, path, bodies,
                            {"connections": connections, "requests": requests}, ("connections", "requests"), count)

    def open(self, target: Target, path: str, bodies: list[bytes], *, rate: float, seconds: float,
             connections: int = 64, processes: int | None = None) -> Result:
        """A fixed arrival `rate` for `seconds`, up to `connections` requests in flight."""
        return self._spread("open", target, path, bodies, {"rate": rate, "seconds": seconds,
                                                           "connections": connections},
                            ("rate", "connections"), processes)

    def sequential(self, target: Target, path: str, bodies: list[bytes], requests: int) -> Result:
        """One connection, one request at a time: the keep-alive round trip as one caller sees it."""
        return self.closed(target, path, bodies, connections=1, requests=requests, processes=1)
