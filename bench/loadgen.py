"""A small, fast HTTPS load generator for the benchmarks (closed loop and fixed-rate open loop).

httpx costs hundreds of µs per request on the client side and would measure itself; this speaks minimal
HTTP/1.1 keep-alive over asyncio TLS streams so the server is what gets measured. Loopback only.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time
from dataclasses import dataclass


@dataclass
class Result:
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def line(self, label: str) -> str:
        mean = statistics.fmean(self.latencies) if self.latencies else float("nan")
        return (f"{label:<34} {self.throughput:9.0f} req/s  p50 {self.percentile(50) * 1e3:6.2f} ms  "
                f"p99 {self.percentile(99) * 1e3:6.2f} ms  mean {mean * 1e3:6.2f} ms  errors {self.errors}")


def client_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    return context


async def _connect(port: int, context: ssl.SSLContext, server_hostname: str):
    return await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname)


def _request_bytes(path: str, body: bytes, host: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> bool:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200")


async def closed_loop(port: int, ca_file: str, server_hostname: str, path: str, bodies: list[bytes],
                      concurrency: int, requests: int) -> Result:
    """`concurrency` connections each sending back-to-back until `requests` are done."""
    context = client_context(ca_file)
    payloads = [_request_bytes(path, b, server_hostname) for b in bodies]
    connections = [await _connect(port, context, server_hostname) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    async def worker(reader, writer) -> None:
        nonlocal errors
        for i in counter:
            started = time.perf_counter()
            ok = await _one(reader, writer, payloads[i % len(payloads)])
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker(r, w) for r, w in connections))
    elapsed = time.perf_counter() - started
    for _, writer in connections:
        writer.close()
    return Result(requests, elapsed, latencies, errors)


async def open_loop(port: int, ca_file: str, server_hostname: str, path: str, bodies: list[bytes],
                    rate: float, seconds: float, max_connections: int = 64) -> Result:
    """Requests arrive at a fixed `rate` regardless of responses (as from many apiserver goroutines)."""
    context = client_context(ca_file)
    payloads = [_request_bytes(path, b, server_hostname) for b in bodies]
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(max_connections):
        pool.put_nowait(await _connect(port, context, server_hostname))
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)

    async def send(i: int, scheduled: float) -> None:
        nonlocal errors
        reader, writer = await pool.get()
        try:
            ok = await _one(reader, writer, payloads[i % len(payloads)])
        finally:
            pool.put_nowait((reader, writer))
        latencies.append(time.perf_counter() - scheduled)  # includes queueing: what the caller waits
        errors += not ok

    tasks = []
    started = time.perf_counter()
    for i in range(total):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    while not pool.empty():
        pool.get_nowait()[1].close()
    return Result(total, elapsed, latencies, errors)
