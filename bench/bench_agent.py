"""Node-agent pass time and RSS on a fake node of 250 pods x 4 containers (a temp dir laid out like cgroupfs).

Runs, as separate processes, in one go:
1. `qosgate agent --local --once` — a whole process: start-up, one pass (read the tree, decide, write, observe);
2. `qosgate agent --local --passes N` — N passes back to back in one process (steady-state pass time);
3. a null baseline process: the same interpreter walking and reading the same tree N times with the agent's
   own HostCgroupFS, deciding nothing.
Prints pass times (min / mean), RSS, and agent/baseline ratios. Target: one pass over 1,000 containers
<= 100 ms.

    python bench/bench_agent.py [--pods 250] [--containers 4] [--passes 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.agent.faketree import FakeNode, MiB  # noqa: E402

BASELINE = r"""
import json, resource, sys, time
from qosgate.agent.cgroupfs import HostCgroupFS
from qosgate.core.cgtree import SNAPSHOT_FILES
fs = HostCgroupFS(sys.argv[1])
times = []
for _ in range(int(sys.argv[2])):
    started = time.perf_counter()
    fs.snapshot("", ["memory.min"], max_depth=1)
    snap = fs.snapshot(sys.argv[3], SNAPSHOT_FILES)
    times.append(time.perf_counter() - started)
print(json.dumps({"dirs": len(snap), "passSecondsMin": min(times), "passSecondsMean": sum(times) / len(times),
                  "maxRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def build(base: Path, pods: int, containers: int) -> FakeNode:
    node = FakeNode(base)
    qos = ("burstable", "guaranteed", "besteffort")
    for i in range(pods):
        node.pod(qos[i % 3], tuple(((i + j) % 4) * 32 * MiB for j in range(containers)), current=16 * MiB)
    return node


def run(argv: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=250)
    parser.add_argument("--containers", type=int, default=4)
    parser.add_argument("--passes", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qosgate-bench-agent-") as tmp:
        base = Path(tmp)
        node = build(base, args.pods, args.containers)
        agent = [sys.executable, "-m", "qosgate.cli.agent", "--node-name", "bench", "--local",
                 "--cgroup-root", str(node.root), "--proc-root", str(node.proc), "--nri-config", "",
                 "--state-file", str(base / "state.json"), "--log-level", "warning"]
        once = run([*agent, "--once"])  # the first pass writes every ancestor
        loop = run([*agent, "--passes", str(args.passes)])  # steady state: decide, nothing to write
        null = run([sys.executable, "-c", BASELINE, str(node.root), str(args.passes), node.kdir])
    containers = args.pods * args.containers
    print(f"fake node: {args.pods} pods x {args.containers} containers = {containers} containers, "
          f"{null['dirs']} cgroups under {node.kdir}")
    print(f"agent --once (first pass, {once['writes']} writes): pass {once['passSeconds'] * 1e3:.1f} ms, "
          f"process {once['totalSeconds'] * 1e3:.1f} ms of passes, max RSS {once['maxRssBytes'] / MiB:.1f} MiB")
    print(f"agent --passes {args.passes} (steady state, {loop['writes']} writes): pass min "
          f"{loop['passSecondsMin'] * 1e3:.1f} ms, mean {loop['passSecondsMean'] * 1e3:.1f} ms, "
          f"max RSS {loop['maxRssBytes'] / MiB:.1f} MiB")
    print(f"null baseline (walk + read only, {args.passes} walks): min {null['passSecondsMin'] * 1e3:.1f} ms, "
          f"mean {null['passSecondsMean'] * 1e3:.1f} ms, max RSS {null['maxRssBytes'] / MiB:.1f} MiB")
    print(f"ratio agent/baseline: pass (mean) {loop['passSecondsMean'] / null['passSecondsMean']:.2f}x, "
          f"RSS {loop['maxRssBytes'] / null['maxRssBytes']:.2f}x")
    verdict = "OK" if loop["passSecondsMean"] <= 0.1 else "OVER"
    print(f"target: one pass over {containers} containers <= 100 ms: {verdict} "
          f"({loop['passSecondsMean'] * 1e3:.1f} ms mean)")


if __name__ == "__main__":
    main()
