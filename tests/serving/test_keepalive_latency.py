"""A served endpoint answers keep-alive requests without a Nagle stall (issue 10).

When a response leaves in two writes (headers, then body) on a socket without ``TCP_NODELAY``, Nagle holds
the body until the client's delayed ACK: ~40 ms per request on Linux, whatever the handler costs. The
probe: median keep-alive round trip of a real `qosgate serve all --local` process against a bare TLS server
that writes each response in one write with ``TCP_NODELAY``, on the same machine, in interleaved rounds.
Only the ratio is asserted, with a generous factor (a stall is a ~100× ratio, honest overhead a few ×).
The control test shows the same probe flags a server that stalls.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.serving.wire import Wire, tls_context
from tests.support.processes import launcher

FACTOR = 20  # qosgate's median may be this many times the bare server's: decoding, deciding, Python
ROUNDS, PER_ROUND = 8, 20
EXTENDER_HOSTNAME = "qosgate-extender.qosgate-system.svc"


@contextlib.contextmanager
def bare_tls_server(cert_dir: Path, body: bytes, *, nodelay: bool = True,
                    one_write: bool = True) -> Iterator[int]:
    """Thread-per-connection TLS server answering every request with `body` (the baseline, or a staller)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
    listener = socket.create_server(("127.0.0.1", 0))

    def connection(tls: ssl.SSLSocket) -> None:
        buffer = b""
        with contextlib.suppress(OSError), tls:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                request_head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = next((int(line.split(b":")[1]) for line in request_head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buffer) < length:
                    buffer += tls.recv(65536)
                buffer = buffer[length:]
                if one_write:
                    tls.sendall(head + body)
                else:
                    tls.sendall(head)
                    tls.sendall(body)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if nodelay:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                tls = context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                continue
            threading.Thread(target=connection, args=(tls,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def medians(calls: dict[str, Callable[[], object]], rounds: int = ROUNDS,
            per_round: int = PER_ROUND) -> dict[str, float]:
    """Median seconds per call of each keep-alive caller, measured in interleaved rounds after a warm-up."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(5):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per_round):
                started = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def review() -> bytes:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"generateName": "web-", "namespace": "team-a",
                        "annotations": {"qos-resources.qosgate.io": "memory-qos=gold"}},
           "spec": {"containers": [{"name": "app", "image": "web",
                                    "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}}}]}}
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "team-a",
        "operation": "CREATE", "userInfo": {"username": "alice"}, "object": pod}})


def filter_args() -> bytes:
    return orjson.dumps({"Pod": {"metadata": {"name": "p", "namespace": "team-a", "uid": "u",
                                              "annotations": {"qosgate.io/memory-min": str(2**30)}}},
                         "Nodes": {"items": [{"metadata": {"name": f"n{i}"},
                                              "status": {"allocatable": {"memory": "8Gi"}}} for i in range(3)]}})


def test_served_webhook_and_extender_answer_keep_alive_requests_without_a_nagle_stall(tmp_path: Path) -> None:
    with launcher(tmp_path) as launch:
        served = launch.start("--local")
        certs = served.cert_dir
        webhook = Wire(served.ports["webhook"], tls_context(certs))
        extender = Wire(served.ports["extender"], tls_context(certs, client_cert=True),
                        server_hostname=EXTENDER_HOSTNAME)
        mutated = webhook.call("POST", "/mutate", review())
        filtered = extender.call("POST", "/filter", filter_args())
        assert mutated.status == 200 and b'"patch"' in mutated.body and not mutated.closes
        assert filtered.status == 200 and b'"n0"' in filtered.body and not filtered.closes
        with bare_tls_server(certs, mutated.body) as bare_port:
            baseline = Wire(bare_port, tls_context(certs))
            result = medians({
                "baseline": lambda: baseline.call("POST", "/mutate", review()),
                "webhook": lambda: webhook.call("POST", "/mutate", review()),
                "extender": lambda: extender.call("POST", "/filter", filter_args()),
            })
            for wire in (baseline, webhook, extender):
                wire.close()
    ratios = {name: result[name] / result["baseline"] for name in ("webhook", "extender")}
    detail = {name: f"{value * 1e3:.3f} ms" for name, value in result.items()}
    assert max(ratios.values()) <= FACTOR, f"keep-alive medians {detail}: ratios {ratios}"


@pytest.mark.parametrize("stalls", [True, False])
def test_the_probe_flags_a_server_whose_body_waits_behind_its_headers(cert_dir: Path, stalls: bool) -> None:
    body = b'{"allowed":true}'
    with bare_tls_server(cert_dir, body) as bare_port, \
            bare_tls_server(cert_dir, body, nodelay=not stalls, one_write=not stalls) as probed_port:
        baseline, probed = Wire(bare_port, tls_context(cert_dir)), Wire(probed_port, tls_context(cert_dir))
        result = medians({"baseline": lambda: baseline.call("POST", "/x", b"{}"),
                          "probed": lambda: probed.call("POST", "/x", b"{}")}, rounds=3, per_round=5)
        baseline.close()
        probed.close()
    assert (result["probed"] / result["baseline"] > FACTOR) is stalls, result
