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
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from keystile.core.decide import Decision
from keystile.serve.cache import CachedLookup

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CACHE_RESULTS = ("hit", "negative_hit", "miss", "filtered")


class Latency:
    """A histogram for one event loop: bucket counts and a sum, no lock."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def add(self, other: Latency) -> None:
        """Add another process's histogram into this one (same buckets)."""
        self.counts = [mine + theirs for mine, theirs in zip(self.counts, other.counts,
                                                             strict=True)]  # fmt: skip
        self.total += other.total

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, +Inf last."""
        running, pairs = 0, []
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            pairs.append((bound, float(running)))
        return pairs


@dataclass
class Totals:
    """What /metrics shows: one process's counts, or their sum over the workers of
    ``serve --workers N`` (keystile.workermetrics). ``lookups`` (cache lookups by
    result), ``entries`` and ``sync_age`` are None before the key cache exists."""

    decisions: Tally[tuple[str, str, str, str]] = field(default_factory=Tally)
    decision_seconds: dict[str, Latency] = field(default_factory=dict)
    handovers: int = 0
    store_seconds: Latency = field(default_factory=Latency)
    lookups: dict[str, int] | None = None
    entries: dict[str, int] | None = None
    sync_age: float | None = None

    def add_counts(self, other: Totals) -> None:
        """Add another process's counters and histograms (not its gauges)."""
        self.decisions.update(other.decisions)
        for adapter, latency in other.decision_seconds.items():
            self.decision_seconds.setdefault(adapter, Latency()).add(latency)
        self.handovers += other.handovers
        self.store_seconds.add(other.store_seconds)
        if other.lookups is not None:
            mine = self.lookups or {}
            self.lookups = {r: mine.get(r, 0) + other.lookups.get(r, 0) for r in CACHE_RESULTS}

    def add_gauges(self, other: Totals) -> None:
        """Add a live process's gauges: cache entries summed (each worker holds its
        own cache), sync age the largest (the worker most behind the store)."""
        if other.entries is not None:
            mine = self.entries or dict.fromkeys(other.entries, 0)
            self.entries = {name: mine.get(name, 0) + n for name, n in other.entries.items()}
        if other.sync_age is not None:
            self.sync_age = max(self.sync_age or 0.0, other.sync_age)


def _histogram(name: str, doc: str, label: str | None, series: dict[str, Latency]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    for value, latency in sorted(series.items()):
        family.add_metric([value] if label else [], latency.buckets(), latency.total)
    return family


class _Snapshot(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        totals = self.metrics.shown()
        decisions = CounterMetricFamily(
            "keystile_decisions",
            "Auth decisions.",
            labels=["adapter", "outcome", "reason", "detail"],
        )
        for labels, count in sorted(totals.decisions.items()):
            decisions.add_metric(list(labels), count)
        yield decisions
        yield _histogram("keystile_decision_seconds", "Time to decide one auth request.",
                         "adapter", totals.decision_seconds)  # fmt: skip
        yield CounterMetricFamily(
            "keystile_wire_handovers",
            "Connections handed to aiohttp: a request the auth fast path does not serve.",
            value=totals.handovers,
        )
        yield _histogram("keystile_store_lookup_seconds",
                         "Time of one key lookup in the store (cache miss).", None,
                         {"": totals.store_seconds})  # fmt: skip
        if totals.lookups is None or totals.entries is None or totals.sync_age is None:
            return
        lookups = CounterMetricFamily(
            "keystile_cache_lookups", "Key cache lookups by result.", labels=["result"]
        )
        for result in CACHE_RESULTS:
            lookups.add_metric([result], totals.lookups.get(result, 0))
        yield lookups
        entries = GaugeMetricFamily("keystile_cache_entries", "Cached entries.", labels=["cache"])
        entries.add_metric(["positive"], totals.entries.get("positive", 0))
        entries.add_metric(["negative"], totals.entries.get("negative", 0))
        yield entries
        yield GaugeMetricFamily(
            "keystile_cache_sync_age_seconds",
            "Seconds since the store's change log was last read.",
            value=totals.sync_age,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions: Tally[tuple[str, str, str, str]] = Tally()
        self.cache: CachedLookup | None = None
        self.decision_seconds: dict[str, Latency] = {}
        self.store_seconds = Latency()
        self.handovers = 0  # bumped by keystile.wire
        # what /metrics shows: this process's totals, or under serve --workers N the
        # sum over the workers (keystile.workermetrics replaces it)
        self.shown: Callable[[], Totals] = self.totals
        self.registry.register(_Snapshot(self))

    def totals(self) -> Totals:
        """This process's counts as they are now (the live objects, not copies)."""
        totals = Totals(self.decisions, self.decision_seconds, self.handovers,
                        self.store_seconds)  # fmt: skip
        cache = self.cache
        if cache is not None:
            stats = cache.stats
            totals.lookups = {"hit": stats.hits, "negative_hit": stats.negative_hits,
                              "miss": stats.misses, "filtered": stats.filtered}  # fmt: skip
            totals.entries = {"positive": len(cache.positive), "negative": len(cache.negative)}
            totals.sync_age = cache.clock() - cache.last_sync
        return totals

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
