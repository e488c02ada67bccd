"""`qosgate agent` as a process: --local --once on a fake tree, and the long-running form serving health and
metrics while its passes keep going (even over a broken tree)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from qosgate.cli.agent import add_agent_parser
from tests.agent.faketree import FakeNode, MiB
from tests.support.tls import eventually

REPO = Path(__file__).resolve().parents[2]


def command(node: FakeNode, tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "qosgate.cli.agent", "--node-name", "n1", "--cgroup-root", str(node.root),
            "--proc-root", str(node.proc), "--state-file", str(tmp / "state.json"), "--nri-config", "",
            "--log-format", "text", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def test_local_once_does_one_pass_and_prints_a_summary(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    pod, _ = node.pod("burstable", (100 * MiB,))
    done = subprocess.run(command(node, tmp_path, "--local", "--once"), capture_output=True, text=True,
                          env=env(), timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["writes"] == 3 and summary["failedWrites"] == 0 and not summary["published"]
    assert summary["report"]["kernelProtectedBytes"] == 100 * MiB
    assert node.min(pod) == 100 * MiB


def test_the_node_name_is_required(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    argv = [a for a in command(node, tmp_path, "--local", "--once") if a not in ("--node-name", "n1")]
    done = subprocess.run(argv, capture_output=True, text=True, env={**env(), "NODE_NAME": ""}, timeout=60,
                          check=False)
    assert done.returncode == 1 and "--node-name is required" in done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_running_agent_serves_health_and_metrics_over_a_broken_tree(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    node.pod("burstable", (100 * MiB,))
    node.set(node.qos_path("besteffort"), "garbage")
    port = free_port()
    process = subprocess.Popen(command(node, tmp_path, "--local", "--interval", "0.2", "--health-port", str(port),
                                       "--host", "127.0.0.1"), env=env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        eventually(lambda: _get(f"{base}/readyz") == 200, timeout=30)
        assert _get(f"{base}/healthz") == 200
        metrics = httpx.get(f"{base}/metrics").text
        for name in ("qosgate_node_protectable_bytes", "qosgate_node_accounted_bytes",
                     "qosgate_node_kernel_protected_bytes", "qosgate_node_protection_drift_bytes",
                     "qosgate_node_overcommit_bytes", "qosgate_agent_pass_duration_seconds_bucket",
                     "qosgate_agent_writes_total", "qosgate_agent_errors_total", "qosgate_agent_nri_mismatches"):
            assert name in metrics, name
        assert 'qosgate_node_kernel_protected_bytes{node="n1"} 1.048576e+08' in metrics
        assert 'qosgate_agent_errors_total{kind="read"}' in metrics
        (node.root / node.kdir).rename(node.root / "gone")  # the whole tree vanishes: still healthy
        eventually(lambda: _get(f"{base}/healthz") == 200 and process.poll() is None, timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_parser_registers_the_documented_flags() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_agent_parser(parser.add_subparsers())
    text = parser._subparsers._group_actions[0].choices["agent"].format_help()  # type: ignore[union-attr]
    for flag in ("--node-name", "--cgroup-root", "--kubeconfig", "--local", "--once", "--interval",
                 "--report-interval", "--health-port", "--state-file", "--protectable-bytes", "--reserve",
                 "--kubelet-policy", "--nri-config", "--offered-classes", "--dry-run"):
        assert flag in text, flag
