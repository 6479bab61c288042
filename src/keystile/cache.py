"""Key records by hash, in front of the store.

- positive: digest -> record (TTL 30 s by default); policy is still evaluated on
  every request from the record, decisions are never cached;
- negative: digests known not to exist (short TTL), so an unknown key tried
  again and again costs one query;
- filter: a Bloom filter of every stored hash (:mod:`keystile.hashfilter`), so
  a spray of random well-formed keys costs no query at all. A key it has never
  seen (created by another process since the last change-log read) may still
  be looked up, up to ``TRICKLE`` times a second, so a key is usable the moment
  it is created while a spray gets nothing but the trickle;
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

from keystile.hashfilter import HashFilter
from keystile.keys import MAX_TOKEN_LEN
from keystile.lookup import KeyLookup
from keystile.store import UNKNOWN, KeyRecord, Unknown

TRICKLE = 20  # lookups a second of keys the filter has not seen
FILTER_PAGE = 50_000


class CacheStats:
    __slots__ = ("filtered", "hits", "misses", "negative_hits")

    def __init__(self) -> None:
        self.hits = self.misses = self.negative_hits = self.filtered = 0


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
        self.filter: HashFilter | None = None  # None: every well-formed key may exist
        self._trickle_at = 0.0
        self._trickle_left = 0

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
        hashes = self.filter
        if hashes is not None and not self._filtered_in(candidates, hashes):
            # certainly not stored; looked up only while the trickle lasts
            if self._trickle_left <= 0 and self.clock() - self._trickle_at < 1.0:
                self.stats.filtered += 1
                return lookup.static.match(token)
            if self._known_unknown(candidates):
                return lookup.static.match(token)
            self._take_trickle()
            return UNKNOWN
        if self._known_unknown(candidates):
            return lookup.static.match(token)
        return UNKNOWN

    @staticmethod
    def _filtered_in(candidates: tuple[tuple[str, str], ...], hashes: HashFilter) -> bool:
        for _, digest in candidates:  # noqa: SIM110 - no generator on the request path
            if digest in hashes:
                return True
        return False

    def _known_unknown(self, candidates: tuple[tuple[str, str], ...]) -> bool:
        """Every candidate digest is negative-cached (counted as a negative hit)."""
        negative = self.negative
        for _, digest in candidates:
            if digest not in negative:
                return False
        self.stats.negative_hits += 1
        return True

    def _take_trickle(self) -> None:
        """Use one of the TRICKLE lookups a second of keys the filter has not seen."""
        now = self.clock()
        if now - self._trickle_at >= 1.0:
            self._trickle_at, self._trickle_left = now, TRICKLE
        self._trickle_left -= 1

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
        """Forget what is cached about these hashes (changed, created or removed keys)."""
        self.generation += 1
        for digest in hashes:
            self.positive.pop(digest, None)
            self.negative.pop(digest, None)
            if self.filter is not None:
                self.filter.add(digest)

    async def start(self) -> None:
        """Begin at the current end of the change log, with every stored hash filtered."""
        self.seq = await self.lookup.store.last_event()
        await self.lookup.refresh()
        await self.load_filter()
        self.last_sync = self.clock()

    async def load_filter(self) -> None:
        """Build the filter from the store, page by page; swap it in when complete."""
        store = self.lookup.store
        pages: list[list[str]] = []
        page = await store.key_hashes("", FILTER_PAGE)
        while page:
            pages.append(page)
            page = await store.key_hashes(page[-1], FILTER_PAGE) if len(page) == FILTER_PAGE else []
        stored = sum(len(p) for p in pages)
        hashes = HashFilter(stored * 2 + 10_000)
        for page in pages:
            for digest in page:
                hashes.add(digest)
        self.filter = hashes  # anything created meanwhile arrives with the next sync

    async def sync(self) -> int:
        """Apply changes made by any writer since the last sync; returns how many."""
        seq, hashes = await self.lookup.store.events_since(self.seq)
        if hashes:
            self.invalidate(hashes)
            await self.lookup.refresh()
            if self.filter is not None and self.filter.full:
                await self.load_filter()
        self.seq = seq
        self.last_sync = self.clock()
        return len(hashes)
