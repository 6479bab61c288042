import asyncio
from pathlib import Path

import pytest

from keystile.core import keys
from keystile.core.errors import StoreUnavailable
from keystile.core.keys import Hasher, KeyFormat
from keystile.core.model import KeyRecord
from keystile.manage.service import KeyService
from keystile.serve.cache import TRICKLE, CachedLookup
from keystile.serve.lookup import KeyLookup
from keystile.serve.static_keys import StaticKeys
from keystile.store import Store
from tests.backends import BOTH

from .conftest import Clock

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL


async def found(cache: CachedLookup, token: str) -> KeyRecord | None:
    """The record the cache resolves ``token`` to."""
    entry = await cache.find(token)
    return None if entry is None else entry.record


def cached(store: Store, clock: Clock, **kwargs: float) -> CachedLookup:
    lookup = KeyLookup(store, Hasher(), KeyFormat(), StaticKeys())
    return CachedLookup(lookup, clock=clock, **kwargs)  # type: ignore[arg-type]


async def test_hits_and_negative_hits(store: Store, clock: Clock) -> None:
    issued = await KeyService(store, Hasher()).create("k")
    cache = cached(store, clock)
    await cache.start()
    unknown = keys.generate()
    for _ in range(3):
        assert (await found(cache, issued.key)).id == issued.record.id
        assert await cache.find(unknown) is None
    assert (cache.stats.misses, cache.stats.hits, cache.stats.negative_hits) == (2, 2, 2)
    assert issued.key not in cache.positive and unknown not in cache.negative  # keyed by hash


async def test_malformed_keys_never_touch_the_cache_or_store(store: Store, clock: Clock) -> None:
    cache = cached(store, clock)
    await cache.start()
    for token in ["ks_" + "a" * 49, "x" * 1000, "caf\u00e9", "ks_short"]:
        assert await cache.find(token) is None
    assert cache.stats.misses == 0 and len(cache.negative) == 0


async def test_change_by_another_writer_is_seen_after_sync(db_path: Path, clock: Clock) -> None:
    async with await Store.open(db_path) as server_store, await Store.open(db_path) as cli_store:
        cache = cached(server_store, clock)
        await cache.start()
        cli = KeyService(cli_store, Hasher())
        issued = await cli.create("k")
        new_key = keys.generate()
        assert await cache.find(new_key) is None  # negative-cached
        assert (await found(cache, issued.key)).enabled
        await cli.revoke(issued.record.id)
        assert (await found(cache, issued.key)).revoked_at is None  # stale until sync
        assert await cache.sync() == 2  # the creation and the revocation
        assert (await found(cache, issued.key)).revoked_at is not None


async def test_negative_entry_is_dropped_when_the_hash_appears(db_path: Path, clock: Clock) -> None:
    async with await Store.open(db_path) as server_store, await Store.open(db_path) as cli_store:
        cache = cached(server_store, clock)
        await cache.start()
        issued = KeyService(cli_store, Hasher(), clock=clock)._issue(clock.now, name="late")
        assert await cache.find(issued.key) is None  # unknown, and remembered as unknown
        await cli_store.insert_keys([issued.record])  # e.g. an import in another process
        assert await cache.find(issued.key) is None
        await cache.sync()
        assert (await found(cache, issued.key)).id == issued.record.id


async def test_a_change_in_this_process_is_seen_at_once(store: Store, clock: Clock) -> None:
    cache = cached(store, clock)
    await cache.start()
    service = KeyService(store, Hasher(), clock=clock)
    service.on_change.append(cache.invalidate)
    issued = await service.create("k")
    assert (await found(cache, issued.key)).revoked_at is None
    await service.revoke(issued.record.id)  # no sync in between
    assert (await found(cache, issued.key)).revoked_at is not None


async def test_stale_cache_is_bypassed_so_a_dead_store_fails_closed(
    store: Store, clock: Clock
) -> None:
    issued = await KeyService(store, Hasher()).create("k")
    cache = cached(store, clock, max_staleness=5.0)
    await cache.start()
    assert await cache.find(issued.key) is not None
    await store.close()
    assert await cache.find(issued.key) is not None  # fresh: the cache answers
    clock.now += 6  # no successful sync for longer than max_staleness
    assert not cache.fresh
    with pytest.raises(StoreUnavailable):
        await cache.find(issued.key)


async def test_a_read_racing_an_invalidation_is_not_cached(store: Store, clock: Clock) -> None:
    issued = await KeyService(store, Hasher()).create("k")
    cache = cached(store, clock)
    await cache.start()
    original = cache.lookup.find_stored

    async def slow_read(candidates: tuple[tuple[str, str], ...]):  # type: ignore[no-untyped-def]
        record = await original(candidates)
        cache.invalidate([issued.record.key_hash])  # a change lands while we read
        return record

    cache.lookup.find_stored = slow_read  # type: ignore[method-assign]
    assert await cache.find(issued.key) is not None
    assert len(cache.positive) == 0


async def test_group_changes_by_another_process_reach_the_cache(
    db_path: Path, clock: Clock
) -> None:
    from keystile.manage.accounts import AccountService

    async with await Store.open(db_path) as server_store, await Store.open(db_path) as cli_store:
        cache = cached(server_store, clock)
        await cache.start()
        keys = KeyService(cli_store, Hasher())
        accounts = AccountService(keys)
        issued = await keys.create("k", scopes=["chat"])
        group = await accounts.create_group("artists", ["images"])
        await cache.sync()
        assert (await found(cache, issued.key)).granted == ("chat",)
        await accounts.set_membership(group.id, issued.record.id, True)
        await cache.sync()
        assert (await found(cache, issued.key)).granted == ("chat", "images")
        await accounts.update_group(group.id, scopes=["images", "audio"])
        await cache.sync()
        assert (await found(cache, issued.key)).granted == ("audio", "chat", "images")
        await accounts.delete_group(group.id)
        await cache.sync()
        assert (await found(cache, issued.key)).granted == ("chat",)


async def test_a_spray_of_unknown_keys_reaches_the_store_only_as_a_trickle(
    store: Store, clock: Clock
) -> None:
    issued = await KeyService(store, Hasher()).create("k")
    cache = cached(store, clock)
    await cache.start()
    for _ in range(500):  # distinct, checksum-valid, never stored
        assert await cache.find(keys.generate()) is None
    assert cache.stats.misses <= TRICKLE and cache.stats.filtered >= 500 - TRICKLE
    assert (await found(cache, issued.key)).id == issued.record.id  # a stored key still passes
    clock.now += 1.0  # a new second: the trickle is back
    before = cache.stats.misses
    assert await cache.find(keys.generate()) is None
    assert cache.stats.misses == before + 1


async def test_a_key_made_elsewhere_works_at_once_and_joins_the_filter(
    db_path: Path, clock: Clock
) -> None:
    async with await Store.open(db_path) as server_store, await Store.open(db_path) as cli_store:
        cache = cached(server_store, clock)
        await cache.start()
        issued = await KeyService(cli_store, Hasher()).create("k")
        assert cache.filter is not None and issued.record.key_hash not in cache.filter
        assert (await found(cache, issued.key)).id == issued.record.id  # via the trickle
        await cache.sync()
        assert issued.record.key_hash in cache.filter
        cache._trickle_left = 0  # a spray has used the trickle up
        cache.positive.clear()
        assert (await found(cache, issued.key)).id == issued.record.id  # the filter lets it by


async def test_the_filter_is_rebuilt_when_full(store: Store, clock: Clock) -> None:
    cache = cached(store, clock)
    await cache.start()
    assert cache.filter is not None
    first = cache.filter
    service = KeyService(store, Hasher())
    service.on_change.append(cache.invalidate)
    first.count = first.capacity  # as if nearly full
    issued = await service.create("k")
    await cache.sync()
    assert cache.filter is not first and issued.record.key_hash in cache.filter


async def test_many_first_requests_for_a_key_made_elsewhere_all_pass_with_one_read(
    db_path: Path, clock: Clock
) -> None:
    async with await Store.open(db_path) as server_store, await Store.open(db_path) as cli_store:
        cache = cached(server_store, clock)
        await cache.start()
        issued = await KeyService(cli_store, Hasher()).create("fresh")
        assert cache.filter is not None and issued.record.key_hash not in cache.filter
        spray = [keys.generate() for _ in range(TRICKLE - 1)]  # nearly all of the trickle
        results = await asyncio.gather(
            *(cache.find(token) for token in spray),
            *(found(cache, issued.key) for _ in range(300)),
        )
        assert all(r is None for r in results[: len(spray)])
        assert all(r is not None and r.id == issued.record.id for r in results[len(spray) :])
        assert cache.stats.misses == len(spray) + 1  # one store read for all 300


async def test_a_spent_trickle_wakes_the_change_log_reader(store: Store, clock: Clock) -> None:
    cache = cached(store, clock)
    await cache.start()
    woken = []
    cache.wake = lambda: woken.append(1)
    for _ in range(TRICKLE + 3):
        assert await cache.find(keys.generate()) is None
    assert woken  # the server's reader then runs at once, and the filter learns new keys


async def test_an_unstarted_cache_refuses_to_answer(store: Store, clock: Clock) -> None:
    issued = await KeyService(store, Hasher()).create("k")
    with pytest.raises(StoreUnavailable):
        await cached(store, clock).find(issued.key)
