"""A stalled SQLite never stalls the event loop.

Another process takes, and holds, SQLite's WAL read locks on our database: the
byte-range locks on the ``-shm`` file that every reader needs one of. A reader
that cannot get one does not wait on its busy timeout: SQLite retries, sleeping
longer each time, for up to ~10 s before failing with SQLITE_PROTOCOL ("locking
protocol"). Meanwhile a ticking task shows whether the event loop still runs.
Real database files, real locks, no mocks.

And the other way round: with the event loop kept busy, the lookup thread still
gets the GIL in time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from keystile.core.errors import StoreUnavailable
from keystile.core.keys import Hasher
from keystile.manage.service import KeyService
from keystile.store import KeyRecord, Store
from keystile.store.base import LOOKUP_TIMEOUT, MAX_PENDING_LOOKUPS

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX byte-range locks")

# SQLite's unix VFS keeps the WAL locks as fcntl byte-range locks on the -shm
# file from byte 120: WAL_WRITE_LOCK, CKPT, RECOVER, then READ_LOCK(0..4) at 123-127.
# The holder lets go when the block ends (it is killed) or after HOLD_MAX seconds: code
# that blocks the event loop (the old inline read) cannot tell it, and would
# otherwise sit out SQLite's ~10 s of retries for every lookup.
HOLD_MAX = 4.0
HOLDER = textwrap.dedent(
    f"""
    import fcntl, os, select, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 123, os.SEEK_SET)
    print("held", flush=True)
    select.select([sys.stdin], [], [], {HOLD_MAX})
    """
)
MAX_GAP = 0.2  # seconds the loop may go without running the ticker (10 ms asleep)
SLACK = 0.25  # seconds past LOOKUP_TIMEOUT a timed-out lookup may take to raise


@contextmanager
def wal_read_locks_held(db_path: Path) -> Iterator[None]:
    """Another process holds every WAL read lock until the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"{db_path}-shm"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
            yield
        finally:
            holder.kill()  # its locks go with it


class Ticker:
    """Wakes every 10 ms and keeps the longest time between two wake-ups."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            last = now

    async def longest_gap(self) -> float:
        await asyncio.sleep(0.03)  # a gap still open is counted once the ticker runs again
        return self.worst


@asynccontextmanager
async def ticking() -> AsyncIterator[Ticker]:
    ticker = Ticker()
    task = asyncio.create_task(ticker.run())
    await asyncio.sleep(0.02)
    try:
        yield ticker
    finally:
        task.cancel()


async def _stored_key(store: Store) -> KeyRecord:
    record = (await KeyService(store, Hasher()).create("svc", scopes=["chat"])).record
    assert await store.find_by_hash(record.key_hash) == record  # the lookup works, warm
    return record


def _plain_read(db_path: Path) -> None:
    """A fresh reader with a 100 ms busy timeout, as the old inline reader had."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 100")
        conn.execute("SELECT count(*) FROM keys").fetchall()
    finally:
        conn.close()


async def _timed_lookup(store: Store, key_hash: str) -> tuple[float, BaseException | None]:
    started = time.perf_counter()
    try:
        await store.find_by_hash(key_hash)
    except StoreUnavailable as exc:
        return time.perf_counter() - started, exc
    return time.perf_counter() - started, None


async def _lookup_until_it_works(store: Store, key_hash: str) -> KeyRecord | None:
    """After the locks are released the lookup thread finishes its stalled read."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return await store.find_by_hash(key_hash)
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_the_holder_stalls_a_reader_past_its_busy_timeout(db_path: Path) -> None:
    """The set-up is real: a plain read waits far longer than its 100 ms busy timeout."""
    async with await Store.open(db_path):
        with wal_read_locks_held(db_path):
            read = asyncio.ensure_future(asyncio.to_thread(_plain_read, db_path))
            done, _ = await asyncio.wait({read}, timeout=1.0)
            assert not done, "the read should still be retrying after 1 s"
        await asyncio.wait_for(read, timeout=5)  # and it finishes once the locks are gone


async def test_a_cold_lookup_fails_closed_fast_while_the_loop_keeps_running(
    db_path: Path,
) -> None:
    """A cache miss during the stall raises StoreUnavailable after LOOKUP_TIMEOUT and
    the event loop never stops (the old inline read held it for ~10 s, then raised
    'locking protocol'). Lookups after it fail at once instead of queueing."""
    async with await Store.open(db_path) as store:
        record = await _stored_key(store)
        async with ticking() as ticker:
            with wal_read_locks_held(db_path):
                took, error = await _timed_lookup(store, record.key_hash)
                gap = await ticker.longest_gap()
                assert gap < MAX_GAP, f"the event loop stopped for {gap:.2f} s"
                assert isinstance(error, StoreUnavailable), f"no error after {took:.2f} s"
                assert LOOKUP_TIMEOUT * 0.9 <= took < LOOKUP_TIMEOUT + SLACK, took
                # the lookup thread is still stuck in that read: the next ones fail at once
                for _ in range(20):
                    took, error = await _timed_lookup(store, record.key_hash)
                    assert isinstance(error, StoreUnavailable)
                    assert took < 0.05, took
                assert await ticker.longest_gap() < MAX_GAP, ticker.worst
            assert await _lookup_until_it_works(store, record.key_hash) == record
            assert await store.find_by_hash("0" * 64) is None
            assert await ticker.longest_gap() < MAX_GAP, ticker.worst


async def test_a_burst_of_misses_queues_at_most_max_pending(db_path: Path) -> None:
    """Many misses at once while the thread is stuck: MAX_PENDING_LOOKUPS wait (and fail
    at LOOKUP_TIMEOUT), the rest fail at once; queued work never grows past the cap."""
    burst = MAX_PENDING_LOOKUPS * 3
    async with await Store.open(db_path) as store:
        record = await _stored_key(store)
        async with ticking() as ticker:
            with wal_read_locks_held(db_path):
                results = await asyncio.gather(
                    *(_timed_lookup(store, record.key_hash) for _ in range(burst))
                )
                gap = await ticker.longest_gap()
                assert gap < MAX_GAP, f"the event loop stopped for {gap:.2f} s"
                assert all(isinstance(error, StoreUnavailable) for _, error in results)
                waited = sorted(took for took, _ in results if took >= LOOKUP_TIMEOUT * 0.9)
                assert len(waited) == MAX_PENDING_LOOKUPS, len(waited)
                assert waited[-1] < LOOKUP_TIMEOUT + SLACK, waited[-1]
                assert store._lookups.pending == MAX_PENDING_LOOKUPS
                assert await ticker.longest_gap() < MAX_GAP, ticker.worst
            assert await _lookup_until_it_works(store, record.key_hash) == record
            assert store._lookups.pending == 0  # the abandoned lookups were skipped
            assert await ticker.longest_gap() < MAX_GAP, ticker.worst


async def test_change_log_readiness_and_usage_flush_wait_off_the_loop(db_path: Path) -> None:
    """What else the server awaits while serving (the change-log poll, /readyz's ping,
    the usage flush) goes through aiosqlite's threads: stalled too, but the loop runs,
    and each finishes once the locks are gone."""
    async with await Store.open(db_path) as store:
        record = await _stored_key(store)
        seq = await store.last_event()
        hour = int(time.time() // 3600 * 3600)
        async with ticking() as ticker:
            with wal_read_locks_held(db_path):
                calls = {
                    "ping": store.ping(),
                    "last_event": store.last_event(),
                    "events_since": store.events_since(0),
                    "add_usage": store.add_usage(
                        {(record.id, hour, "chat", "allow"): 3}, {record.id: time.time()}
                    ),
                }
                tasks = {name: asyncio.ensure_future(call) for name, call in calls.items()}
                done, _ = await asyncio.wait(tasks.values(), timeout=0.5)
                assert not done, "the store should be stalled for these too"
                assert await ticker.longest_gap() < MAX_GAP, ticker.worst
            results = await asyncio.wait_for(asyncio.gather(*tasks.values()), timeout=10)
            assert dict(zip(tasks, results, strict=True))["last_event"] == seq
            assert await store.usage(record.id) == [(hour, "chat", "allow", 3)]
            assert await ticker.longest_gap() < MAX_GAP, ticker.worst


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@asynccontextmanager
async def busy_loop() -> AsyncIterator[None]:
    """Two tasks keep the event loop busy, as a loop serving cached keys at full load:
    CPU in 200 us slices, the loop polled (and the GIL dropped and retaken) between."""

    async def burn() -> None:
        while True:
            _burn(0.0002)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(burn()) for _ in range(2)]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()


async def test_lookups_answer_while_the_loop_is_busy(db_path: Path) -> None:
    """With the loop kept busy, lookups of stored keys still answer within LOOKUP_TIMEOUT.
    A thread that is merely awaited can wait seconds for the GIL behind a busy loop
    (CPython hands it over after 5 ms of asking with no drop in between, and the loop
    drops and retakes it at every poll); a lookup blocks the loop, GIL released, for
    up to LOOKUP_BLOCK instead. This catches a lookup that is only awaited sometimes,
    not always: starving depends on how the OS schedules the two threads."""
    async with await Store.open(db_path) as store:
        record = await _stored_key(store)
        async with busy_loop():
            for _ in range(300):
                took, error = await _timed_lookup(store, record.key_hash)
                assert error is None, error
                assert took < LOOKUP_TIMEOUT, took
                await asyncio.sleep(0.001)


async def test_a_slow_read_is_not_starved_by_a_busy_loop(db_path: Path) -> None:
    """A read slower than LOOKUP_BLOCK is awaited with the loop running; with the loop
    busy, the naps let the thread finish it in time (without them, 7 runs in 8 had a
    lookup time out)."""

    def slow_lookup(conn: sqlite3.Connection, key_hash: str) -> int:
        time.sleep(0.005)  # as SQLite waiting on the disk: GIL released
        for _ in range(10):  # and each of these lets go of the GIL and takes it back
            found = conn.execute("SELECT id FROM keys WHERE key_hash = ?", (key_hash,)).fetchall()
        return len(found)

    async with await Store.open(db_path) as store:
        record = await _stored_key(store)
        async with busy_loop():
            for _ in range(100):
                started = time.perf_counter()
                assert await store._lookups.run("a slow read", slow_lookup, record.key_hash) == 1
                assert time.perf_counter() - started < LOOKUP_TIMEOUT
                await asyncio.sleep(0.005)
