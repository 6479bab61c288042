"""Key records by hash, in front of the store.

- positive: digest -> :class:`Entry` (the record, when it expires, and the
  replies the serving layer rendered for it), at most ``size`` entries, oldest
  out first; an entry older than ``ttl`` is read again. Policy is evaluated on
  every request from the record; decisions are never cached;
- negative: digests known not to exist (short TTL), so an unknown key tried
  again and again costs one query;
- filter: a Bloom filter of every stored hash (:mod:`keystile.hashfilter`), so
  a spray of random well-formed keys costs no query at all. A key it has not
  seen yet (created by another process since the last change-log read) is
  still looked up, up to ``TRICKLE`` distinct keys a second, and running out
  wakes the change-log reader at once, so a new key works at once while a
  spray gets nothing but the trickle;
- one lookup per key: concurrent requests for the same uncached key share one
  store read (a key used by 300 clients at once costs one query);
- coherence: a background task polls the store's change log and drops changed
  hashes; changes made in this process call :meth:`invalidate` directly;
- fail closed: when the log has not been read for ``max_staleness`` seconds
  (the store is down), the cache is bypassed, so lookups fail with the store.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from cachetools import TTLCache

from keystile.core.errors import StoreUnavailable
from keystile.core.flights import Flights
from keystile.core.hashfilter import HashFilter
from keystile.core.keys import MAX_TOKEN_LEN
from keystile.core.model import KeyRecord
from keystile.serve.lookup import Lookup

TRICKLE = 20  # distinct keys a second the filter has not seen that are still looked up
FILTER_PAGE = 50_000
Candidates = tuple[tuple[str, str], ...]


class Entry:
    """A cached key: its record, and what the serving layer rendered for it.

    The rendered replies belong to the serving layer (one per adapter and route:
    the first in two slots, any more in a dict, since nearly every key is used
    through one proxy on one route); they are freed with the entry, so an
    evicted key leaves nothing behind.
    """

    __slots__ = ("_adapter", "_more", "_reply", "_route", "expires", "record")

    def __init__(self, record: KeyRecord, expires: float) -> None:
        self.record = record
        self.expires = expires
        self._adapter: str | None = None
        self._route: object = None
        self._reply: Any = None
        self._more: dict[tuple[str, object], Any] | None = None

    def reply(self, adapter: str, route: object) -> Any:
        """The reply kept for (adapter, route), or None."""
        if self._adapter is adapter and self._route is route:
            return self._reply
        more = self._more
        return None if more is None else more.get((adapter, route))

    def keep(self, adapter: str, route: object, reply: Any) -> None:
        if self._adapter is None:
            self._adapter, self._route, self._reply = adapter, route, reply
        else:
            if self._more is None:
                self._more = {}
            self._more[(adapter, route)] = reply


class CacheStats:
    __slots__ = ("filtered", "hits", "misses", "negative_hits")

    def __init__(self) -> None:
        self.hits = self.misses = self.negative_hits = self.filtered = 0


class CachedLookup:
    def __init__(
        self,
        lookup: Lookup,
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
        self.ttl = ttl
        self.size = size
        self.positive: OrderedDict[str, Entry] = OrderedDict()
        self.negative: TTLCache[str, bool] = TTLCache(negative_size, negative_ttl, timer=clock)
        self.max_staleness = max_staleness
        self.clock = clock
        self.stats = CacheStats()
        self.observe_store = observe_store
        self.generation = 0  # bumped by every invalidation
        self.seq = 0  # last change-log entry applied
        self.last_sync = clock()
        self.started = False
        self.filter: HashFilter | None = None  # None: every well-formed key may exist
        self.wake: Callable[[], None] = lambda: None  # asks the change-log reader to run now
        self._trickle_at = 0.0
        self._trickle_left = TRICKLE
        self._loading: Flights[KeyRecord | None] = Flights()
        self._static: dict[str, Entry] = {}

    @property
    def fresh(self) -> bool:
        return self.started and self.clock() - self.last_sync <= self.max_staleness

    async def find(self, token: str) -> Entry | None:
        """The cached entry for ``token``, or None for no such key.

        Answers from memory without awaiting when it can; otherwise one store
        read, shared with every concurrent request for the same key. Raises
        StoreError when the store cannot answer (fail closed).

        A cached record is found by hash before any format check: a token whose
        hash is stored is that key. Everything else is format-checked before the
        negative cache and the store, so malformed keys never reach the store.
        """
        if len(token) > MAX_TOKEN_LEN:
            return None
        lookup = self.lookup
        candidates = lookup.hasher.candidates(token)
        now = self.clock()
        if not self.started:
            raise StoreUnavailable("the key cache was never started")
        if now - self.last_sync > self.max_staleness:
            # the store is the only source now: fail with it
            if not lookup.may_exist(token):
                return self._static_entry(token)
            return await self._load(candidates, token, cache=False)
        positive = self.positive
        for scheme, digest in candidates:
            entry = positive.get(digest)
            if entry is not None and entry.record.hash_scheme == scheme:
                if entry.expires > now:
                    self.stats.hits += 1
                    return entry
                break
        if not lookup.may_exist(token) or self._known_unknown(candidates):
            return self._static_entry(token)
        hashes = self.filter
        # Not in the filter: certainly not stored when it was last fed. Looked up
        # only while the trickle lasts, or when the same key is being looked up.
        if (
            hashes is not None
            and not self._filtered_in(candidates, hashes)
            and candidates[0][1] not in self._loading
            and not self._take_trickle(now)
        ):
            self.stats.filtered += 1
            return self._static_entry(token)  # fmt: skip
        return await self._load(candidates, token, cache=True)

    async def _load(self, candidates: Candidates, token: str, cache: bool) -> Entry | None:
        """One store read per key, however many requests wait for it (a shared flight:
        one waiter giving up never cancels the read for the others)."""
        record = await self._loading.read(candidates[0][1], partial(self._read, candidates, cache))
        if record is not None:
            entry = self.positive.get(record.key_hash)
            if entry is not None and entry.record.id == record.id:
                return entry
            return Entry(record, self.clock() + self.ttl)  # not kept: the cache is stale
        return self._static_entry(token)

    async def _read(self, candidates: Candidates, cache: bool) -> KeyRecord | None:
        self.stats.misses += 1
        generation = self.generation
        started = time.perf_counter()
        record = await self.lookup.find_stored(candidates)
        if self.observe_store is not None:
            self.observe_store(time.perf_counter() - started)
        if cache and generation == self.generation:  # nothing changed meanwhile: keep it
            if record is not None:
                self._keep(record)
            else:
                for _, digest in candidates:
                    self.negative[digest] = True
        return record

    def _keep(self, record: KeyRecord) -> None:
        positive = self.positive
        positive.pop(record.key_hash, None)
        while len(positive) >= self.size:
            positive.popitem(last=False)
        positive[record.key_hash] = Entry(record.lean(), self.clock() + self.ttl)
        if self.filter is not None:  # stored: found without the trickle from now on
            self.filter.add(record.key_hash)

    def _static_entry(self, token: str) -> Entry | None:
        record = self.lookup.static.match(token)
        if record is None:
            return None
        entry = self._static.get(record.id)
        if entry is None or entry.record is not record:
            entry = self._static[record.id] = Entry(record, float("inf"))
        return entry

    @staticmethod
    def _filtered_in(candidates: Candidates, hashes: HashFilter) -> bool:
        for _, digest in candidates:  # noqa: SIM110 - no generator on the request path
            if digest in hashes:
                return True
        return False

    def _known_unknown(self, candidates: Candidates) -> bool:
        """Every candidate digest is negative-cached (counted as a negative hit)."""
        negative = self.negative
        for _, digest in candidates:
            if digest not in negative:
                return False
        self.stats.negative_hits += 1
        return True

    def _take_trickle(self, now: float) -> bool:
        """Use one of the TRICKLE lookups a second; running out wakes the log reader."""
        if now - self._trickle_at >= 1.0:
            self._trickle_at, self._trickle_left = now, TRICKLE
        if self._trickle_left <= 0:
            self.wake()
            return False
        self._trickle_left -= 1
        return True

    def invalidate(self, hashes: Iterable[str]) -> None:
        """Forget what is cached about these hashes (changed, created or removed keys)."""
        self.generation += 1
        for digest in hashes:
            self.positive.pop(digest, None)
            self.negative.pop(digest, None)
            if self.filter is not None:
                self.filter.add(digest)

    def clear(self) -> None:
        """Forget every cached key (the change log may have been missed)."""
        self.generation += 1
        self.positive.clear()
        self.negative.clear()

    async def start(self) -> None:
        """Begin at the current end of the change log, with every stored hash filtered."""
        self.seq = await self.lookup.store.last_event()
        await self.lookup.refresh()
        await self.load_filter()
        self.last_sync = self.clock()
        self.started = True

    async def load_filter(self) -> None:
        """Build the filter from the store, page by page; swap it in when complete."""
        read = self.lookup.stored_hashes
        pages: list[list[str]] = []
        page = await read("", FILTER_PAGE)
        while page:
            pages.append(page)
            page = await read(page[-1], FILTER_PAGE) if len(page) == FILTER_PAGE else []
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
