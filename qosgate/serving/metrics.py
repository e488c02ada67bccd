"""Prometheus metrics, defined once. Handlers record into these; live state is read at scrape time.

State that already lives in caches (quota usage, per-node protected bytes, cache sync, certificate expiry)
is exported by `StateCollector` calling registered providers when Prometheus scrapes, so the hot path
never updates gauges it does not need to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

ADMISSIONS = Counter(
    "qosgate_admission_requests", "Admission reviews answered, by webhook, operation, decision and reason.",
    ["webhook", "operation", "decision", "reason"],
)
ADMISSION_LATENCY = Histogram(
    "qosgate_admission_duration_seconds", "Time to decide one admission review (decode to encode).",
    ["webhook"], buckets=LATENCY_BUCKETS,
)
EXTENDER_LATENCY = Histogram(
    "qosgate_extender_request_duration_seconds", "Time to answer one scheduler extender call.",
    ["verb"], buckets=LATENCY_BUCKETS,
)
EXTENDER_RESULTS = Counter(
    "qosgate_extender_requests", "Scheduler extender calls, by verb and outcome.", ["verb", "outcome"],
)
EXTENDER_FORWARDED = Counter(
    "qosgate_extender_forwarded", "Verbs a follower replica relayed to the leader, by verb and outcome.",
    ["verb", "outcome"],
)
HTTP_REQUESTS = Counter(
    "qosgate_http_requests", "HTTP requests answered, by listener, route and status code.",
    ["listener", "route", "code"],
)
HTTP_CONNECTIONS = Counter(
    "qosgate_http_connections", "Connections accepted (TLS handshake done), by listener: a rate close to the "
    "request rate means clients do not keep connections alive and pay a handshake per call.", ["listener"],
)
HTTP_CONNECTIONS_REFUSED = Counter(
    "qosgate_http_connections_refused", "Connections closed at accept time, by listener and reason.",
    ["listener", "reason"],
)
LEDGER_CONFLICTS = Counter(
    "qosgate_ledger_conflicts", "Optimistic-concurrency conflicts (HTTP 409) retried on ledger objects.", ["ledger"],
)

# A provider yields (name, help, labels dict, value) samples; grouped into gauge families by name.
Sample = tuple[str, str, dict[str, str], float]
Provider = Callable[[], Iterable[Sample]]


class StateCollector(Collector):
    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def register(self, key: str, provider: Provider) -> None:
        """Register (or replace) a provider; keyed so a restarted component does not export twice."""
        with self._lock:
            self._providers[key] = provider

    def unregister(self, key: str) -> None:
        with self._lock:
            self._providers.pop(key, None)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            providers = list(self._providers.values())
        families: dict[str, GaugeMetricFamily] = {}
        label_names: dict[str, list[str]] = {}
        for provider in providers:
            for name, help_text, labels, value in provider():
                family = families.get(name)
                if family is None:
                    label_names[name] = sorted(labels)
                    family = families[name] = GaugeMetricFamily(name, help_text, labels=label_names[name])
                family.add_metric([labels.get(k, "") for k in label_names[name]], value)
        return list(families.values())


STATE = StateCollector()
REGISTRY.register(STATE)


def cache_samples(component: str, stats: Callable[[], Mapping[str, Mapping[str, object]]]) -> Provider:
    """Watch-cache health per informer (from ClusterCache.stats), for a component (webhook / extender)."""

    def provider() -> Iterable[Sample]:
        for informer, values in stats().items():
            labels = {"component": component, "informer": informer}
            yield ("qosgate_cache_synced", "1 once the informer's initial list completed.", labels,
                   float(bool(values.get("synced"))))
            for counter in ("events", "relists", "reconnects"):
                count = values.get(counter, 0)
                yield (f"qosgate_cache_{counter}", f"Informer {counter} since start.", labels,
                       float(count) if isinstance(count, int | float) else 0.0)

    return provider
