"""Summing /metrics over workers through snapshot files (keystile.workermetrics)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from keystile.core.decide import Decision
from keystile.observe.metrics import Latency, Metrics, Totals
from keystile.serve.workermetrics import WorkerMetrics, dump, load, retire


def sibling(directory: Path, pid: int, allowed: int, entries: int, age: float) -> None:
    """A file as another worker would have written it."""
    totals = Totals(handovers=1, lookups={"hit": allowed, "miss": 1},
                    entries={"positive": entries, "negative": 0}, sync_age=age)  # fmt: skip
    totals.decisions[("nginx", "allow", "", "")] = allowed
    totals.decision_seconds["nginx"] = Latency()
    for _ in range(allowed):
        totals.decision_seconds["nginx"].observe(0.0003)
    (directory / f"live-{pid}.json").write_bytes(dump(totals))


def test_a_snapshot_survives_the_round_trip() -> None:
    totals = Totals(handovers=3, lookups={"hit": 2}, entries={"positive": 1}, sync_age=0.25)
    totals.decisions[("envoy_http", "unauthenticated", "invalid_api_key", "no_key")] = 7
    totals.store_seconds.observe(0.002)
    back = load(dump(totals))
    assert back.decisions == totals.decisions and back.handovers == 3
    assert back.store_seconds.counts == totals.store_seconds.counts
    assert back.lookups == {"hit": 2} and back.entries == {"positive": 1}
    assert back.sync_age is not None and 0.25 <= back.sync_age < 1.0
    never = load(dump(Totals(sync_age=math.inf)))  # a store file deleted: never synced
    assert never.sync_age == math.inf
    assert load(dump(Totals())).sync_age is None  # no cache yet: no cache gauges


def test_a_scrape_sums_the_siblings_and_keeps_the_counts_of_the_dead(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.decision_observer("nginx")(Decision(None), 0.0001)
    shared = WorkerMetrics(tmp_path, metrics)
    sibling(tmp_path, 101, allowed=4, entries=3, age=0.1)
    sibling(tmp_path, 102, allowed=5, entries=2, age=2.0)
    retire(tmp_path, 102)  # reaped by the parent
    (tmp_path / ".103.tmp").write_bytes(b"{half a fi")  # a write cut short: not read
    text = metrics.render().decode()
    allowed = 'keystile_decisions_total{adapter="nginx",detail="",outcome="allow",reason=""}'
    assert f"{allowed} 10.0" in text
    assert 'keystile_decision_seconds_count{adapter="nginx"} 10.0' in text
    assert "keystile_wire_handovers_total 2.0" in text
    # gauges of live workers only: the dead one's cache is gone with it
    assert 'keystile_cache_entries{cache="positive"} 3.0' in text
    assert (tmp_path / f"live-{os.getpid()}.json").exists()  # written before answering
    age = shared.summed().sync_age  # the live sibling's, aged to now; not the dead one's 2 s
    assert age is not None and 0.1 <= age < 1.0
