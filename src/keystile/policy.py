"""Per-key and per-team policy beyond scopes: IP allowlists and rate limits.

Rate limits use a sliding window of slots: each period is cut into 60 slots and
a request counts against the last 61 of them, which always cover at least one
whole period. So over any span of one period a limit of N admits at most N:
not the 2N a token bucket with a burst of N lets through, nor the 1.5N of the
common two-window estimate when a burst ends one window. Memory is 61 counters
per limit. State is in memory, per process, behind :class:`RateLimiter` so that
a shared backend can replace it.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from keystile.clientip import IPNetwork, parse_address, parse_networks
from keystile.store import KeyRecord

PERIODS = {"per_second": 1, "per_minute": 60, "per_hour": 3600, "per_day": 86400}


@lru_cache(maxsize=4096)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return parse_networks(cidrs)


@lru_cache(maxsize=65536)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return parse_address(text)


def ip_allowed(record: KeyRecord, client_ip: str | None) -> bool:
    """The key's and its team's allowlists both admit ``client_ip`` (None: unknown)."""
    lists = [record.allowed_ips, record.team.allowed_ips if record.team else None]
    for cidrs in lists:
        if cidrs is None:
            continue
        address = _address(client_ip) if client_ip else None
        if address is None or not any(address in net for net in _networks(cidrs)):
            return False
    return True


@dataclass(frozen=True, slots=True)
class RateInfo:
    """The tightest limit that applied: what X-RateLimit-* report."""

    limit: int
    remaining: int
    reset: int  # seconds until the window rolls over


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    rate: RateInfo | None
    retry_after: int | None = None


class RateLimiter(Protocol):
    def hit(self, record: KeyRecord, now: float, commit: bool = True) -> Verdict: ...
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

    def hit(self, record: KeyRecord, now: float, commit: bool = True) -> Verdict:
        """Count one request against every limit, unless one of them is spent
        (``commit=False``: only say whether it would pass)."""
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
                return Verdict(False, RateInfo(limit, 0, retry), retry)
            remaining = limit - window.total - 1
            if tightest is None or remaining < tightest.remaining:
                # Reset: when everything counted now has left the window (one period)
                tightest = RateInfo(limit, remaining, period)
            taken.append((window, slot))
        for window, slot in taken if commit else ():
            window.counts[slot % (SLOTS + 1)] += 1
            window.total += 1
        return Verdict(True, tightest)

    def prune(self, now: float) -> None:
        """Forget windows with nothing left in them (called from a background task)."""
        stale = [bucket for bucket, (window, slot_len) in self._windows.items()
                 if int(now // slot_len) - window.last > SLOTS]  # fmt: skip
        for bucket in stale:
            del self._windows[bucket]
