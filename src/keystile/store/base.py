"""SQLite plumbing: connections, transactions, error translation.

Three connections, none used on the event loop's thread. One writes (every write
in ``BEGIN IMMEDIATE`` under a lock, so writers never meet a read-to-write upgrade
deadlock) and one reads, each on its aiosqlite thread; a third, read-only, serves
the request path's key lookup on a thread of its own (``LookupThread``), which the
request path waits for at most ``LOOKUP_TIMEOUT`` and holds up the event loop for
at most ``LOOKUP_BLOCK``. WAL lets them, and other processes such as the CLI, work
side by side. sqlite errors become :mod:`keystile.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from queue import SimpleQueue
from typing import Any, TypeVar, cast

import aiosqlite

from keystile.core.errors import Conflict, StoreError, StoreUnavailable
from keystile.store.migrate import migrate
from keystile.store.sql import Audit, Row, SQLBase, dumps

__all__ = ["Audit", "SQLiteBase", "dumps", "migrate_file", "prepare_file", "translated"]

BUSY_TIMEOUT_MS = 5000

LOOKUP_TIMEOUT = 0.25
"""Seconds the request path waits for a key lookup. Past that the lookup raises
StoreUnavailable (the request is refused with 503 ``auth_unavailable``: a key not
in the cache fails closed) and the read, left on the lookup thread, is abandoned.
SQLite can stall a reader for seconds whatever its busy timeout (WAL read locks
held by another process make it retry, sleeping, for up to ~10 s before it
gives up with SQLITE_PROTOCOL); the event loop never waits for that."""
LOOKUP_BLOCK = 0.002
"""Seconds a lookup may hold up the event loop: it waits this long, blocked, for
the lookup thread (almost always done in well under a millisecond), then awaits
the rest of LOOKUP_TIMEOUT with the loop running. Blocked, the loop's thread lets
go of the GIL; awaiting, it may not (see ``LookupThread``)."""
LOOKUP_BUSY_TIMEOUT_MS = 100  # below LOOKUP_TIMEOUT: a plain busy wait ends before the caller's
MAX_PENDING_LOOKUPS = 64  # lookups queued or running on the lookup thread; past it, refuse at once
NAP_EVERY = 0.02  # while the lookup thread is behind, the loop naps this often...
NAP = 0.001  # ...this long, so that the thread gets the GIL even when the loop never idles

T = TypeVar("T")


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn sqlite errors into ours, naming what we were doing."""
    try:
        yield
    except StoreError:
        raise
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"{action}: {exc}") from exc
    except (sqlite3.Error, OSError, ValueError) as exc:
        # aiosqlite raises ValueError when its connection is closed.
        raise StoreUnavailable(f"{action}: {exc}") from exc


def prepare_file(path: Path) -> None:
    """Create the folder (0700) and the database file (0600) if they are missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")


def migrate_file(path: Path, target: int | None = None) -> int:
    """Create and migrate the database at ``path`` (blocking). Returns the schema version."""
    with translated(f"migrating {path}"):
        prepare_file(path)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            _setup(conn)
            return migrate(conn, target)
        finally:
            conn.close()


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, None when there is none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class _Job:
    """One call on the lookup thread; ``done`` is held until it has run (or been skipped)."""

    __slots__ = ("abandoned", "args", "done", "error", "fn", "result", "waiter")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()
        self.waiter: asyncio.Future[None] | None = None  # set once the caller awaits
        self.abandoned = False  # the caller gave up: skip it if not begun

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class LookupThread:
    """The request path's reads: one thread owning one read-only connection.

    ``run`` hands a function of that connection to the thread and blocks the event
    loop for it at most ``LOOKUP_BLOCK``: a lookup takes tens of us there, and a
    blocked loop thread lets go of the GIL, so the lookup thread runs at once and
    no trip through the event loop is needed. Past that (a slow or stalled read)
    the caller awaits, with the loop running, until ``LOOKUP_TIMEOUT`` has passed
    since it began, then gets StoreUnavailable.

    Awaiting alone is not enough. CPython makes the holder hand the GIL over only
    once another thread has asked for it for 5 ms with no release in between; a
    busy event loop releases it (every poll, every socket call) and takes it back
    before the waiting thread wakes, far more often than that, so a lookup thread
    can wait seconds for it while the loop is busy. So while the thread is behind,
    the loop naps (``NAP`` every ``NAP_EVERY``), and new lookups await at once,
    without blocking.

    While the thread is stuck (a read that SQLite keeps retrying), lookups fail at
    once instead of queueing behind it: from the time one has timed out until the
    thread finishes something, and whenever ``MAX_PENDING_LOOKUPS`` are already
    queued or running. A queued lookup whose caller has given up is skipped.

    The thread is a daemon with a queue of its own, not an executor's: a hand-off
    through ThreadPoolExecutor cost ~20 us more.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="keystile-lookup", daemon=True)
        self._conn: sqlite3.Connection | None = None  # opened, used and closed on the thread
        # queued or running = submitted - finished; each written by one thread only
        self._submitted = 0
        self._finished = 0
        self._stuck_at = -1  # _finished when a lookup last timed out: stuck while unchanged
        self._nap: asyncio.TimerHandle | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> LookupThread:
        lookups = cls(path)
        lookups._thread.start()
        try:
            await lookups._call(lookups._connect)
        except BaseException:
            lookups._jobs.put(None)
            raise
        return lookups

    def _connect(self, _: sqlite3.Connection | None) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {LOOKUP_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA query_only = 1")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _disconnect(self, conn: sqlite3.Connection | None) -> None:
        self._conn = None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        """Close the connection once the reads before it are done (or skipped)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._call(self._disconnect)
        finally:
            self._jobs.put(None)
            if self._nap is not None:
                self._nap.cancel()
        self._thread.join()  # it has nothing left but to end (and a fork may follow)

    @property
    def pending(self) -> int:
        """Lookups queued or running on the thread."""
        return self._submitted - self._finished

    async def _call(self, fn: Callable[[sqlite3.Connection | None], None]) -> None:
        """Open or close, on the thread, waiting as long as it takes."""
        job = _Job(fn, ())
        self._submitted += 1
        self._jobs.put(job)
        await self._await("", job, None)

    async def run(self, action: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the lookup thread, within ``LOOKUP_TIMEOUT``."""
        with translated(action):
            if self._closed:
                raise StoreUnavailable(f"{action}: the store is closed")
            behind = self._submitted - self._finished
            if behind >= MAX_PENDING_LOOKUPS:
                raise StoreUnavailable(f"{action}: {MAX_PENDING_LOOKUPS} lookups already waiting")
            if behind and self._finished == self._stuck_at:
                raise StoreUnavailable(f"{action}: the store has not answered a lookup"
                                       f" for over {LOOKUP_TIMEOUT} s")  # fmt: skip
            job = _Job(fn, args)
            self._submitted += 1
            self._jobs.put(job)
            if not behind and job.done.acquire(timeout=LOOKUP_BLOCK):
                return cast(T, job.outcome())
            left = LOOKUP_TIMEOUT - (0 if behind else LOOKUP_BLOCK)
            return cast(T, await self._await(action, job, left))

    async def _await(self, action: str, job: _Job, left: float | None) -> Any:
        """Wait, with the loop running, ``left`` seconds more (None: no limit) for the job."""
        loop = asyncio.get_running_loop()
        waiter = job.waiter = loop.create_future()
        if job.done.acquire(blocking=False):  # it ended before it saw the waiter
            return job.outcome()
        if self._nap is None:
            self._nap = loop.call_later(NAP_EVERY, self._nap_now)
        timer = None if left is None else loop.call_later(left, self._expire, waiter, action)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            job.abandoned = True
        return job.outcome()

    def _expire(self, waiter: asyncio.Future[None], action: str) -> None:
        if not waiter.done():
            self._stuck_at = self._finished
            waiter.set_exception(StoreUnavailable(f"{action}: no answer within {LOOKUP_TIMEOUT} s"))

    def _nap_now(self) -> None:
        """Block the loop for NAP, GIL released, while the lookup thread is behind."""
        self._nap = None
        if self._submitted != self._finished:
            time.sleep(NAP)
            if self._submitted != self._finished:
                self._nap = asyncio.get_running_loop().call_later(NAP_EVERY, self._nap_now)

    def _serve(self) -> None:
        """The lookup thread: jobs in order until told to stop."""
        while (job := self._jobs.get()) is not None:
            if not job.abandoned:  # else its caller gave up: skip it
                try:
                    job.result = job.fn(self._conn, *job.args)
                except BaseException as exc:
                    job.error = exc
            self._finished += 1  # before the caller hears of it: it sees no lookup pending
            job.done.release()
            waiter = job.waiter
            if waiter is not None:
                with suppress(RuntimeError):  # its loop is closed: nobody waits
                    waiter.get_loop().call_soon_threadsafe(_wake, waiter)


def _read_and_parse(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any], parse: Callable[[list[Row]], T]
) -> T:
    return parse(conn.execute(sql, params).fetchall())


class SQLiteBase(SQLBase):
    """Three connections to one SQLite file, none on the event loop's thread: a
    writer and a reader on aiosqlite's threads, and the lookup thread's reader
    for the request path's key lookup.

    Everything but that lookup (listings, writes, the change log, ``ping``) goes
    through aiosqlite, one trip per query, and is awaited as long as it takes
    (a 5 s busy timeout; SQLite may retry longer) with the loop running. The
    lookup, a few indexed reads of some tens of us, runs all its queries in one
    trip to the lookup thread, within ``LOOKUP_TIMEOUT`` (see ``LookupThread``).
    """

    def __init__(
        self,
        path: Path,
        reader: aiosqlite.Connection,
        writer: aiosqlite.Connection,
        lookups: LookupThread,
    ) -> None:
        self.path = path
        self._reader = reader
        self._writer = writer
        self._lookups = lookups
        self._write_lock = asyncio.Lock()
        self._identity = file_identity(path)  # the file these connections have open
        self.lost: str | None = None  # why the store no longer answers (file deleted)

    def describe(self) -> str:
        return str(self.path)

    def file_changed(self) -> str | None:
        """None while ``path`` is still the file the store opened; else what happened
        to it ("deleted", "replaced"): a restore from backup, say, or an rm."""
        now = file_identity(self.path)
        if now is None:
            return None if self.lost is not None else "deleted"
        if self.lost is not None:  # detached: any file there is one to open (a file made
            return "replaced"  # right after the deletion often gets the same inode back)
        return None if now == self._identity else "replaced"

    async def detach(self, why: str) -> None:
        """Stop answering (every call raises StoreUnavailable naming ``why``)."""
        self.lost = why
        await self._close_connections()

    async def reopen(self) -> None:
        """Open the file now at ``path`` (replaced under us) in place of the old one."""
        if self.lost is None:  # detached ones are closed already
            await self._close_connections()
        _, self._reader, self._writer, self._lookups = await self._connect(self.path)
        self._identity = file_identity(self.path)
        self.lost = None

    @classmethod
    async def _connect(
        cls, path: Path | str
    ) -> tuple[Path, aiosqlite.Connection, aiosqlite.Connection, LookupThread]:
        path = Path(path)
        await asyncio.to_thread(migrate_file, path)
        opened: list[aiosqlite.Connection] = []
        with translated(f"opening {path}"):
            try:
                for _ in range(2):  # the reader, the writer
                    conn = await aiosqlite.connect(path, isolation_level=None)
                    opened.append(conn)
                    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                    await conn.execute("PRAGMA synchronous = NORMAL")
                lookups = await LookupThread.open(path)
            except BaseException:  # nothing left open behind a failed start
                for conn in opened:
                    with contextlib.suppress(Exception):
                        await conn.close()
                raise
        return path, opened[0], opened[1], lookups

    async def close(self) -> None:
        await self._close_connections()

    async def _close_connections(self) -> None:
        """Close all three, each even when another fails (the first failure raised)."""
        failure: BaseException | None = None
        for close in (self._reader.close, self._writer.close, self._lookups.close):
            try:
                with translated("closing the store"):
                    await close()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    async def _fetch(
        self,
        action: str,
        sql: str,
        params: Sequence[Any] = (),
        conn: aiosqlite.Connection | None = None,
    ) -> list[Row]:
        """Rows on the reader, or on ``conn`` (the writer, inside a transaction)."""
        if self.lost is not None:
            raise StoreUnavailable(f"{action}: {self.lost}")
        with translated(action):
            # one trip to the connection's thread, not three
            return list(await (conn or self._reader).execute_fetchall(sql, params))

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        if self.lost is not None:
            raise StoreUnavailable(f"{action}: {self.lost}")
        async with self._write_lock:
            with translated(action):
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield self._writer
                except BaseException:
                    await self._writer.execute("ROLLBACK")
                    raise
                await self._writer.execute("COMMIT")

    async def _one(self, conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> Any:
        async with conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def _lookup(
        self, action: str, sql: str, params: Sequence[Any], parse: Callable[[list[Row]], T]
    ) -> T:
        """All on the lookup thread, the parsing too (see ``LookupThread``)."""
        return await self._lookups.run(action, _read_and_parse, sql, params, parse)

    async def _columns(self, table: str) -> list[str]:
        rows = await self._fetch(
            f"reading the columns of {table}",
            "SELECT name FROM pragma_table_info(?) ORDER BY cid",
            (table,),
        )
        return [row[0] for row in rows]  # fmt: skip
