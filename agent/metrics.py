"""The agent's Prometheus metrics (names fixed: the alerts use them). Per-node gauges come from the last pass
through qosgate.serving.metrics.STATE; counters and the pass histogram are recorded as things happen."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PASS_DURATION = Histogram(
    "qosgate_agent_pass_duration_seconds", "Time of one agent pass (read the tree, decide, write, observe).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
WRITES = Counter("qosgate_agent_writes", "memory.min writes by the agent, by result (ok, error).", ["result"])
ERRORS = Counter(
    "qosgate_agent_errors",
    "Agent problems by kind: read (unreadable/garbage cgroup file), write, api, state, pass (unexpected).",
    ["kind"],
)

# Every known label value exists from the first scrape at 0: rate() over a counter that appears only with its
# first increment misses that increment, and an alert on it would stay silent for the first error.
WRITE_RESULTS = ("ok", "error")
ERROR_KINDS = ("read", "write", "api", "state", "pass")
for _result in WRITE_RESULTS:
    WRITES.labels(_result)
for _kind in ERROR_KINDS:
    ERRORS.labels(_kind)
