"""Key records by hash, in front of the store.

- positive: digest -> record (TTL 30 s by default); policy is still evaluated on
  every request from the record, decisions are never cached;
- negative: digests known not to exist (short TTL), so a spray of unknown keys
  does not become a spray of queries;
- coherence: a background task polls the store's change log (one indexed query
  every ``poll_interval``) and drops changed hashes; changes made in this process
  call :meth:`invalidate` directly;
- fail closed: when the log has not been read for ``max_staleness`` seconds
  (the store is down), the cache is bypassed, so lookups fail with the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from cachetools import TTLCache

from keystile.keys import MAX_TOKEN_LEN
from keystile.lookup import KeyLookup
from keystile.store import UNKNOWN, KeyRecord, Unknown


class CacheStats:
    __slots__ = ("hits", "misses", "negative_hits", "store_seconds")

    def __init__(self) -> None:
        self.hits = self.misses = self.negative_hits = 0
        self.store_seconds: list[float] = []


class CachedLookup:
    def __init__(
        self,
        lookup: KeyLookup,
        *,
        ttl: float = 30.0,
        size: int = 100_000,
        negative_ttl: float = 5.0,
        negative_size: int = 100_000,
        max_staleness: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        observe_store: Callable[[float], None] | None = None,
    ) -> None:
        self.lookup = lookup
        self.positive: TTLCache[str, KeyRecord] = TTLCache(size, ttl, timer=clock)
        self.negative: TTLCache[str, bool] = TTLCache(negative_size, negative_ttl, timer=clock)
        self.max_staleness = max_staleness
        self.clock = clock
        self.stats = CacheStats()
        self.observe_store = observe_store
        self.generation = 0  # bumped by every invalidation
        self.seq = 0  # last change-log entry applied
        self.last_sync = clock()

    @property
    def fresh(self) -> bool:
        return self.clock() - self.last_sync <= self.max_staleness

    def find_now(self, token: str) -> KeyRecord | Unknown | None:
        """The record for ``token``, None, or ``UNKNOWN`` when only the store can tell.

        A cached record is found by hash before any format check: a token whose
        hash is stored is that key. Everything else is format-checked before the
        negative cache and the store, so malformed keys never reach the store.
        """
        lookup = self.lookup
        if len(token) > MAX_TOKEN_LEN:
            return None
        candidates = lookup.hasher.candidates(token)
        if self.clock() - self.last_sync > self.max_staleness:
            return UNKNOWN  # the store is the only source now: fail with it
        positive = self.positive
        for scheme, digest in candidates:
            record = positive.get(digest)
            if record is not None and record.hash_scheme == scheme:
                self.stats.hits += 1
                return record
        if not lookup.may_exist(token):
            return lookup.static.match(token)
        if all(digest in self.negative for _, digest in candidates):
            self.stats.negative_hits += 1
            return lookup.static.match(token)
        return UNKNOWN

    async def find(self, token: str) -> KeyRecord | None:
        """:meth:`find_now`, asking the store when it must; raises StoreError when it can't."""
        found = self.find_now(token)
        if not isinstance(found, Unknown):
            return found
        lookup = self.lookup
        if not lookup.may_exist(token):  # stale cache: still no query for malformed keys
            return lookup.static.match(token)
        candidates = lookup.hasher.candidates(token)
        self.stats.misses += 1
        generation = self.generation
        started = time.perf_counter()
        record = await lookup.find_stored(candidates)
        if self.observe_store is not None:
            self.observe_store(time.perf_counter() - started)
        if generation == self.generation:  # nothing changed while we asked: safe to keep
            if record is not None:
                self.positive[record.key_hash] = record
            else:
                for _, digest in candidates:
                    self.negative[digest] = True
        return record if record is not None else lookup.static.match(token)

    def invalidate(self, hashes: Iterable[str]) -> None:
        self.generation += 1
        for digest in hashes:
            self.positive.pop(digest, None)
            self.negative.pop(digest, None)

    async def start(self) -> None:
        """Begin at the current end of the change log."""
        self.seq = await self.lookup.store.last_event()
        await self.lookup.refresh()
        self.last_sync = self.clock()

    async def sync(self) -> int:
        """Apply changes made by any writer since the last sync; returns how many."""
        seq, hashes = await self.lookup.store.events_since(self.seq)
        if hashes:
            self.invalidate(hashes)
            await self.lookup.refresh()
        self.seq = seq
        self.last_sync = self.clock()
        return len(hashes)
