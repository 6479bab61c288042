"""/metrics under ``serve --workers N``: the sum over the workers, whichever answers.

Each worker counts in its own memory, lock-free (keystile.metrics), so the
request path is the same as with one process. Off that path, every worker
writes a snapshot of its counts to ``live-<pid>.json`` in a directory the
parent made for this server (temp file + rename: a reader sees a whole file,
old or new) every ``PUBLISH_INTERVAL`` seconds, when it stops, and just before
it answers a scrape; the scrape then adds its siblings' files to its own live
counts. A sibling's figures are thus up to ``PUBLISH_INTERVAL`` old.

Why files rather than asking the siblings over sockets at scrape time: the
counts of a worker that died must stay in the totals anyway (counters must not
go backwards), and a file does that by staying there; a busy or stuck sibling
never holds up a scrape; and there is no second server in each worker.

Counters never go backwards: every file only grows, a scrape writes its own
file before it answers, so no later scrape (by any worker) shows less than it
did. When the parent reaps a worker it renames the file to ``gone-<pid>.json``:
its counters and histograms stay in the sum (what it counted in its last
``PUBLISH_INTERVAL`` before a SIGKILL is lost, and was never shown), its gauges
leave it. Gauges: cache entries summed over live workers (each holds its own
cache), sync age the largest (the worker most behind the store). The parent
removes the directory when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import orjson

from keystile.observe.metrics import LATENCY_BUCKETS, Latency, Metrics, Totals

PUBLISH_INTERVAL = 0.5  # seconds: how old a sibling's figures in a scrape can be
LIVE, GONE = "live-", "gone-"

log = logging.getLogger("keystile.workers")


def _latency(data: list[Any]) -> Latency:
    latency = Latency()
    *counts, latency.total = data
    if len(counts) == len(LATENCY_BUCKETS) + 1:  # else written by another version: skip
        latency.counts = [int(n) for n in counts]
    return latency


def dump(totals: Totals) -> bytes:
    """A process's totals as JSON; ``sync_age`` as the wall-clock time of the last
    sync, so a reader can age it to its own now."""
    synced = None
    if totals.sync_age is not None and math.isfinite(totals.sync_age):
        synced = time.time() - totals.sync_age
    return orjson.dumps({
        "decisions": [[*labels, n] for labels, n in totals.decisions.items()],
        "decision_seconds": {a: [*h.counts, h.total] for a, h in totals.decision_seconds.items()},
        "handovers": totals.handovers,
        "store_seconds": [*totals.store_seconds.counts, totals.store_seconds.total],
        "lookups": totals.lookups, "entries": totals.entries,
        "synced": synced, "has_cache": totals.sync_age is not None,
    })  # fmt: skip


def load(data: bytes) -> Totals:
    """The totals ``dump`` wrote."""
    raw = orjson.loads(data)
    totals = Totals(handovers=int(raw["handovers"]), store_seconds=_latency(raw["store_seconds"]))
    for *labels, n in raw["decisions"]:
        totals.decisions[(labels[0], labels[1], labels[2], labels[3])] += int(n)
    totals.decision_seconds = {a: _latency(h) for a, h in raw["decision_seconds"].items()}
    totals.lookups, totals.entries = raw["lookups"], raw["entries"]
    if raw["has_cache"]:  # a store file deleted under it: never synced since
        totals.sync_age = math.inf if raw["synced"] is None else time.time() - raw["synced"]
    return totals


class WorkerMetrics:
    """One worker's side: publish its own totals, show the sum over all workers."""

    def __init__(self, directory: Path, metrics: Metrics) -> None:
        self.directory = directory
        self.metrics = metrics
        self.pid = os.getpid()
        metrics.shown = self.summed

    def publish(self) -> None:
        """Write this worker's totals atomically (a few hundred bytes, local disk)."""
        temporary = self.directory / f".{self.pid}.tmp"
        temporary.write_bytes(dump(self.metrics.totals()))
        temporary.replace(self.directory / f"{LIVE}{self.pid}.json")

    async def publish_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL)
            try:
                self.publish()
            except OSError as exc:  # a full disk: the siblings' scrapes lag behind
                if not failing:
                    log.error("metrics snapshot not written to %s: %s", self.directory, exc)
                failing = True
            else:
                failing = False

    def summed(self) -> Totals:
        """This worker's live totals plus every other worker's file, live or gone."""
        own = self.metrics.totals()
        self.publish()  # first: no later scrape by a sibling may show less than this one
        summed = Totals()
        summed.add_counts(own)
        summed.add_gauges(own)
        seen = {str(self.pid)}
        for name in sorted(os.listdir(self.directory)):
            if not name.startswith((LIVE, GONE)) or not name.endswith(".json"):
                continue
            pid = name.removeprefix(LIVE).removeprefix(GONE).removesuffix(".json")
            if pid in seen:  # the parent renamed it between listing and reading
                continue
            seen.add(pid)
            live, data = self._read(pid)
            if data is None:
                continue
            other = load(data)
            summed.add_counts(other)
            if live:
                summed.add_gauges(other)
        return summed

    def _read(self, pid: str) -> tuple[bool, bytes | None]:
        """(still live, content) of a worker's file, under whichever name it has now."""
        for live, prefix in ((True, LIVE), (False, GONE)):
            with contextlib.suppress(FileNotFoundError):
                return live, (self.directory / f"{prefix}{pid}.json").read_bytes()
        return False, None


def retire(directory: Path, pid: int) -> None:
    """The parent's part when it reaps worker ``pid``: its counts stay, its gauges go."""
    with contextlib.suppress(FileNotFoundError):
        (directory / f"{LIVE}{pid}.json").replace(directory / f"{GONE}{pid}.json")
