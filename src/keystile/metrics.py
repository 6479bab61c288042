"""Prometheus metrics, one registry per app. No per-key labels.

Decision counts are plain integers bumped on the request path and turned into
counters only when /metrics is scraped.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keystile.cache import CachedLookup
from keystile.decide import Decision

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "keystile_decisions", "Auth decisions.", labels=["adapter", "outcome", "reason"]
        )
        for (adapter, outcome, reason), count in sorted(self.metrics.decisions.items()):
            decisions.add_metric([adapter, outcome, reason], count)
        yield decisions
        cache = self.metrics.cache
        if cache is None:
            return
        lookups = CounterMetricFamily(
            "keystile_cache_lookups", "Key cache lookups by result.", labels=["result"]
        )
        lookups.add_metric(["hit"], cache.stats.hits)
        lookups.add_metric(["negative_hit"], cache.stats.negative_hits)
        lookups.add_metric(["miss"], cache.stats.misses)
        yield lookups
        entries = GaugeMetricFamily("keystile_cache_entries", "Cached entries.", labels=["cache"])
        entries.add_metric(["positive"], len(cache.positive))
        entries.add_metric(["negative"], len(cache.negative))
        yield entries
        yield GaugeMetricFamily(
            "keystile_cache_sync_age_seconds",
            "Seconds since the store's change log was last read.",
            value=cache.clock() - cache.last_sync,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions: Tally[tuple[str, str, str]] = Tally()
        self.cache: CachedLookup | None = None
        self.decision_seconds = Histogram(
            "keystile_decision_seconds", "Time to decide one auth request.", ["adapter"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.store_seconds = Histogram(
            "keystile_store_lookup_seconds", "Time of one key lookup in the store (cache miss).",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.registry.register(_Snapshot(self))

    def decision_observer(self, adapter: str) -> Callable[[Decision, float], None]:
        """A cheap per-adapter callback for the request path."""
        observe = self.decision_seconds.labels(adapter).observe
        decisions = self.decisions

        def record(decision: Decision, seconds: float) -> None:
            reason = decision.reason
            if reason is None:
                decisions[(adapter, "allow", "")] += 1
            else:
                decisions[(adapter, reason.outcome.name.lower(), reason.code)] += 1
            observe(seconds)

        return record

    def render(self) -> bytes:
        return generate_latest(self.registry)
