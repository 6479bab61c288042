"""Prometheus metrics, one registry per app. No per-key labels.

The request path only bumps plain integers (one event loop per process, so no
lock is needed); prometheus-client turns them into counters and histograms
when /metrics is scraped. Its own Histogram takes a lock per observation,
which showed up at ~2 us per request in profiles.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from keystile.cache import CachedLookup
from keystile.decide import Decision

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Latency:
    """A histogram for one event loop: bucket counts and a sum, no lock."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, +Inf last."""
        running, pairs = 0, []
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            pairs.append((bound, float(running)))
        return pairs


def _histogram(name: str, doc: str, label: str | None, series: dict[str, Latency]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    for value, latency in sorted(series.items()):
        family.add_metric([value] if label else [], latency.buckets(), latency.total)
    return family


class _Snapshot(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "keystile_decisions",
            "Auth decisions.",
            labels=["adapter", "outcome", "reason", "detail"],
        )
        for labels, count in sorted(self.metrics.decisions.items()):
            decisions.add_metric(list(labels), count)
        yield decisions
        yield _histogram("keystile_decision_seconds", "Time to decide one auth request.",
                         "adapter", self.metrics.decision_seconds)  # fmt: skip
        yield CounterMetricFamily(
            "keystile_wire_handovers",
            "Connections handed to aiohttp: a request the auth fast path does not serve.",
            value=self.metrics.handovers,
        )
        yield _histogram("keystile_store_lookup_seconds",
                         "Time of one key lookup in the store (cache miss).", None,
                         {"": self.metrics.store_seconds})  # fmt: skip
        cache = self.metrics.cache
        if cache is None:
            return
        lookups = CounterMetricFamily(
            "keystile_cache_lookups", "Key cache lookups by result.", labels=["result"]
        )
        lookups.add_metric(["hit"], cache.stats.hits)
        lookups.add_metric(["negative_hit"], cache.stats.negative_hits)
        lookups.add_metric(["miss"], cache.stats.misses)
        lookups.add_metric(["filtered"], cache.stats.filtered)
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
        self.decisions: Tally[tuple[str, str, str, str]] = Tally()
        self.cache: CachedLookup | None = None
        self.decision_seconds: dict[str, Latency] = {}
        self.store_seconds = Latency()
        self.handovers = 0  # bumped by keystile.wire
        self.registry.register(_Snapshot(self))

    def decision_observer(self, adapter: str) -> Callable[[Decision, float], None]:
        """A cheap per-adapter callback for the request path."""
        observe = self.decision_seconds.setdefault(adapter, Latency()).observe
        decisions = self.decisions

        def record(decision: Decision, seconds: float) -> None:
            reason = decision.reason
            if reason is None:
                decisions[(adapter, "allow", "", "")] += 1
            else:
                decisions[(adapter, reason.outcome.name.lower(), reason.code, reason.detail)] += 1
            observe(seconds)

        return record

    def render(self) -> bytes:
        return generate_latest(self.registry)
