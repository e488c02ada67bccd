"""The summary table every benchmark ends with (figure, ratio, target, met), and one-off requests."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from bench.loadgen import Target, request_bytes


@dataclass
class Table:
    title: str
    rows: list[tuple[str, str, float | None, str, bool | None]] = field(default_factory=list)

    def add(self, metric: str, figure: str, ratio: float | None, target: str, met: bool | None) -> None:
        self.rows.append((metric, figure, ratio, target, met))

    def print(self) -> None:
        print(f"\n== {self.title}: summary ==")
        print(f"  {'metric':<44} {'figure':<34} {'ratio':>6}  {'target':<14} met")
        for metric, figure, ratio, target, met in self.rows:
            shown = f"{ratio:6.2f}" if ratio is not None else ""
            verdict = "" if met is None else ("yes" if met else "NO")
            print(f"  {metric:<44} {figure:<34} {shown:>6}  {target:<14} {verdict}")


def fetch(target: Target, path: str, body: bytes, method: str = "POST") -> tuple[int, bytes]:
    """One request on a fresh connection (set-up checks and samples, never measurements)."""
    with socket.create_connection(("127.0.0.1", target.port), timeout=60) as raw, \
            target.context().wrap_socket(raw, server_hostname=target.server_hostname) as tls:
        payload = request_bytes(path, body, target.server_hostname)
        if method != "POST":
            payload = f"{method} {path} HTTP/1.1\r\nHost: {target.server_hostname}\r\n\r\n".encode()
        tls.sendall(payload)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(65536)
            if not chunk:
                raise ConnectionError(f"{path}: connection closed before an answer")
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:
            chunk = tls.recv(1 << 20)
            if not chunk:
                break
            rest += chunk
        return int(head[9:12]), rest[:length]
