"""Per-key and per-team rate limits.

Rate limits use a sliding window of slots: each period is cut into 60 slots and
a request counts against the last 61 of them, which always cover at least one
whole period. So over any span of one period a limit of N admits at most N:
not the 2N a token bucket with a burst of N lets through, nor the 1.5N of the
common two-window estimate when a burst ends one window. Memory is 61 counters
per limit. State is in memory, per process; :mod:`keystile.shared_limits` keeps
the same windows in Redis for every process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from keystile.core.model import KeyRecord, RateInfo

PERIODS = {"per_second": 1, "per_minute": 60, "per_hour": 3600, "per_day": 86400}


@dataclass(frozen=True, slots=True)
class RateCheck:
    """What the key's rate limits say about one more request, before it is counted.

    ``retry_after`` is set when a limit is spent; otherwise :meth:`RateLimiter.take`
    counts the request once the core has allowed it.
    """

    rate: RateInfo | None  # the tightest limit, for X-RateLimit-*
    retry_after: int | None = None
    windows: tuple[tuple[_Window, int], ...] = ()  # (window, slot) to count in

    @property
    def allowed(self) -> bool:
        return self.retry_after is None


class RateLimiter(Protocol):
    def check(self, record: KeyRecord, now: float) -> RateCheck: ...
    def take(self, check: RateCheck) -> None: ...
    def prune(self, now: float) -> None: ...


def buckets(record: KeyRecord) -> list[tuple[str, int, int]]:
    """(bucket id, period, limit) for each rate limit on the key and its team."""
    found = []
    owners = [(f"key:{record.id}", record.limits)]
    if record.team is not None:
        owners.append((f"team:{record.team.id}", record.team.limits))
    for owner, limits in owners:
        for name, period in PERIODS.items():
            if name in limits:
                found.append((f"{owner}:{period}", period, int(limits[name])))
    return found


SLOTS = 60


class _Window:
    """Counts of the last SLOTS + 1 slots of one limit."""

    __slots__ = ("counts", "last", "total")

    def __init__(self, slot: int) -> None:
        self.counts = [0] * (SLOTS + 1)
        self.last = slot
        self.total = 0

    def advance(self, slot: int) -> None:
        """Move to ``slot``, dropping the slots that fall out of the window."""
        if slot <= self.last:
            return
        if slot - self.last > SLOTS:
            self.counts = [0] * (SLOTS + 1)
            self.total = 0
        else:
            for index in range(self.last + 1, slot + 1):
                ring = index % (SLOTS + 1)
                self.total -= self.counts[ring]
                self.counts[ring] = 0
        self.last = max(self.last, slot)

    def frees_at(self, slot_len: float) -> float:
        """When the oldest counted slot leaves the window (a request then fits again)."""
        for index in range(self.last - SLOTS, self.last + 1):
            if self.counts[index % (SLOTS + 1)]:
                return (index + SLOTS + 1) * slot_len
        return (self.last + 1) * slot_len


class SlidingWindowLimiter:
    """In-memory sliding-window limits for one event loop (no locks needed)."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[_Window, float]] = {}
        # id(record) -> (record, its buckets): built once per record, not per request
        self._buckets: dict[int, tuple[KeyRecord, list[tuple[str, int, int]]]] = {}

    def _buckets_of(self, record: KeyRecord) -> list[tuple[str, int, int]]:
        memo = self._buckets.get(id(record))
        if memo is not None and memo[0] is record:
            return memo[1]
        if len(self._buckets) > 100_000:
            self._buckets.clear()
        found = buckets(record)
        self._buckets[id(record)] = (record, found)
        return found

    def check(self, record: KeyRecord, now: float) -> RateCheck:
        """Whether one more request fits every limit; counts nothing (see :meth:`take`)."""
        tightest: RateInfo | None = None
        taken = []
        for bucket, period, limit in self._buckets_of(record):
            slot_len = period / SLOTS
            slot = int(now // slot_len)
            entry = self._windows.get(bucket)
            if entry is None:
                entry = self._windows[bucket] = (_Window(slot), slot_len)
            window = entry[0]
            window.advance(slot)
            if window.total + 1 > limit:
                retry = max(1, math.ceil(window.frees_at(slot_len) - now))
                return RateCheck(RateInfo(limit, 0, retry), retry)
            remaining = limit - window.total - 1
            if tightest is None or remaining < tightest.remaining:
                # Reset: when everything counted now has left the window (one period)
                tightest = RateInfo(limit, remaining, period)
            taken.append((window, slot))
        return RateCheck(tightest, None, tuple(taken))

    @staticmethod
    def take(check: RateCheck) -> None:
        """Count the request :meth:`check` looked at (no await may come between them)."""
        for window, slot in check.windows:
            window.advance(slot)
            window.counts[slot % (SLOTS + 1)] += 1
            window.total += 1

    def prune(self, now: float) -> None:
        """Forget windows with nothing left in them (called from a background task)."""
        stale = [bucket for bucket, (window, slot_len) in self._windows.items()
                 if int(now // slot_len) - window.last > SLOTS]  # fmt: skip
        for bucket in stale:
            del self._windows[bucket]


class InvalidKeyThrottle:
    """Unknown keys per client address over the last minute (sliding window).

    Past ``per_minute`` the next unknown key from that address is answered 429
    ``rate_limited`` (detail ``invalid_keys``) with ``Retry-After``, so a client
    spraying or guessing keys is told to back off. Only requests whose key is
    unknown are counted and answered so: a valid key from the same address
    (clients behind one NAT or proxy address) always goes on to be judged.
    At most ``max_addresses`` addresses are tracked (the oldest dropped first).
    """

    PERIOD = 60

    def __init__(self, per_minute: int, max_addresses: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._windows: dict[str, _Window] = {}

    def retry_after(self, address: str | None, now: float) -> int | None:
        """Seconds until one more unknown key from ``address`` is judged, or None."""
        window = self._windows.get(address or "")
        if window is None:
            return None
        slot_len = self.PERIOD / SLOTS
        window.advance(int(now // slot_len))
        if window.total < self.per_minute:
            return None
        return max(1, math.ceil(window.frees_at(slot_len) - now))

    def count(self, address: str | None, now: float) -> None:
        """One more unknown key from ``address``."""
        key = address or ""
        slot = int(now // (self.PERIOD / SLOTS))
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self.max_addresses:
                del self._windows[next(iter(self._windows))]
            window = self._windows[key] = _Window(slot)
        window.advance(slot)
        window.counts[slot % (SLOTS + 1)] += 1
        window.total += 1

    def prune(self, now: float) -> None:
        """Forget addresses with nothing left in their window (a background task)."""
        slot = int(now // (self.PERIOD / SLOTS))
        for key in [k for k, w in self._windows.items() if slot - w.last > SLOTS]:
            del self._windows[key]
