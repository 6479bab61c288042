"""The PostgreSQL store (asyncpg): for many replicas sharing one database.

The same SQL modules as SQLite's run here: ``?`` placeholders become ``$n``
(:func:`dialect`), everything else is written in SQL both engines speak.

- Reads and writes use a small connection pool. Every write transaction first
  takes one advisory lock of the schema (``pg_advisory_xact_lock``): writers
  queue as they do on SQLite's single writer, so read-check-write steps stay
  atomic and the change log's entries commit in ``seq`` order (a reader that
  has seen entry N never later finds a smaller one committed).
- The request path's lookup (:meth:`_lookup`) is bounded by ``LOOKUP_TIMEOUT``,
  pool wait included: a slow, unreachable or silent database refuses (fails
  closed), never holds requests. A read given up on is cancelled in the
  background; its connection waits at most ``ACQUIRE_TIMEOUT`` for the server to
  acknowledge the cancel, then is closed (a silent server never would).
- Change propagation: triggers write the change log and ``pg_notify`` the
  channel ``keystile_<schema>`` inside the changing transaction, delivered at
  commit. :meth:`follow` listens on a dedicated connection (never a pooled
  one), wakes the change-log reader on each notification, and when that
  connection is lost says so (the caches are flushed: notifications may have
  been missed), then reconnects. The reader's poll every ``poll_interval``
  stays as the backstop.
- Text cannot hold NUL in PostgreSQL: a read with a NUL in a value finds
  nothing (nothing stored can match), a write refuses it as invalid input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from typing import Any, TypeVar

import asyncpg

from keystile.core.errors import Conflict, InvalidInput, StoreError, StoreUnavailable
from keystile.core.flights import within
from keystile.core.urls import redact
from keystile.store.base import LOOKUP_TIMEOUT
from keystile.store.migrate import migrations
from keystile.store.sql import Row, SQLBase
from keystile.store.store import Store

T = TypeVar("T")
POOL_SIZE = 10
CONNECT_TIMEOUT = 5.0
ACQUIRE_TIMEOUT = 2.0
"""Seconds a read waits for a pooled connection, and how long the connection of a
read given up on (its deadline passed) waits for the server to acknowledge the
cancel before it is closed: asyncpg applies the acquire's timeout to the release.
A silent server never acknowledges; without this the connection, and its place
in the pool, would wait for as long as the server stays silent (for good, when
the connection is what went silent)."""
KEEPALIVE = 5.0  # seconds between checks that the listening connection still answers
RECONNECT = (0.1, 0.5, 1.0, 2.0, 5.0)  # waits between attempts to listen again
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('keystile:' || current_schema()))"

log = logging.getLogger("keystile.store")


@lru_cache(maxsize=512)
def dialect(sql: str) -> str:
    """``?`` placeholders (outside quoted text) as PostgreSQL's ``$1``, ``$2``..."""
    out, number, quoted = [], 0, False
    for char in sql:
        if char == "'":
            quoted = not quoted
        elif char == "?" and not quoted:
            number += 1
            out.append(f"${number}")
            continue
        out.append(char)
    return "".join(out)


def _has_nul(params: Iterable[Any]) -> bool:
    return any(isinstance(value, str) and "\x00" in value for value in params)


@contextmanager
def translated(action: str) -> Iterator[None]:
    """asyncpg's errors as ours, naming what we were doing (never a value: the
    server's detail lines, which quote values, are left out)."""
    try:
        yield
    except StoreError:
        raise
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise Conflict(f"{action}: {exc}") from None
    except asyncpg.DataError as exc:
        raise InvalidInput("value", f"{action}: {exc}") from None
    except TimeoutError:  # says nothing itself: a connection, or a pooled one, not in time
        raise StoreUnavailable(f"{action}: no answer in time") from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise StoreUnavailable(f"{action}: {exc}") from None


class Outcome:
    """What ``execute`` returns: the rows a statement touched, as a cursor would say."""

    __slots__ = ("rowcount",)

    def __init__(self, status: str) -> None:
        last = status.rpartition(" ")[2]
        self.rowcount = int(last) if last.isdigit() else -1


class PgConn:
    """One pooled connection inside a write transaction, as the SQL modules use it."""

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.raw = raw

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Outcome:
        if _has_nul(params):
            raise InvalidInput("value", "text may not contain NUL characters")
        return Outcome(await self.raw.execute(dialect(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if any(_has_nul(row) for row in rows):
            raise InvalidInput("value", "text may not contain NUL characters")
        if rows:
            await self.raw.executemany(dialect(sql), rows)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [] if _has_nul(params) else list(await self.raw.fetch(dialect(sql), *params))


def _no_schema(url: str, where: str) -> str:
    """What to do when no schema on the URL's search_path exists."""
    from urllib.parse import parse_qs, urlsplit

    wanted = parse_qs(urlsplit(url).query).get("search_path", [""])[0].split(",")[0].strip()
    if wanted:
        return (f"{where}: schema {wanted!r} (search_path) does not exist; create it first: "
                f'CREATE SCHEMA "{wanted}"; and GRANT CREATE, USAGE on it to the user')  # fmt: skip
    return (f"{where}: no schema on the search_path to keep keystile's tables in; add "
            "?search_path=SCHEMA to the URL, or CREATE SCHEMA for the user")  # fmt: skip


class PostgresBase(SQLBase):
    def __init__(self, url: str, pool: asyncpg.Pool, schema: str) -> None:
        self.url = url
        self._pool = pool
        self.schema = schema
        self.channel = f"keystile_{schema}"

    def describe(self) -> str:
        return redact(self.url)

    @classmethod
    async def _open_pool(cls, url: str) -> tuple[asyncpg.Pool, str]:
        where = redact(url)
        with translated(f"opening the PostgreSQL store {where}"):
            try:
                pool = await asyncpg.create_pool(
                    url, min_size=1, max_size=POOL_SIZE, timeout=CONNECT_TIMEOUT
                )
            except (ValueError, asyncpg.ClientConfigurationError) as exc:
                raise StoreUnavailable(f"opening the PostgreSQL store {where}: {exc}") from None
            try:
                async with pool.acquire() as conn:
                    schema = await conn.fetchval("SELECT current_schema()")
                    if schema is None:  # before migrating: PostgreSQL's own words say less
                        raise StoreUnavailable(_no_schema(url, where))
                    await migrate(conn)
            except BaseException:
                await pool.close()
                raise
        return pool, str(schema)

    async def close(self) -> None:
        with translated("closing the store"):
            await self._pool.close()

    async def _fetch(
        self, action: str, sql: str, params: Sequence[Any] = (), conn: Any = None
    ) -> list[Row]:
        with translated(action):
            if conn is not None:
                rows: list[Row] = await conn.fetch(sql, params)
                return rows
            if _has_nul(params):
                return []
            return await self._read(sql, params)

    async def _read(self, sql: str, params: Sequence[Any]) -> list[Row]:
        """Rows of one statement on a pooled connection (see ACQUIRE_TIMEOUT)."""
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
            return list(await conn.fetch(dialect(sql), *params))

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[PgConn]:
        with translated(action):
            async with self._pool.acquire() as raw, raw.transaction():
                await raw.execute(_LOCK)
                yield PgConn(raw)

    async def _one(self, conn: PgConn, sql: str, params: Sequence[Any]) -> Row | None:
        rows = await conn.fetch(sql, params)
        return rows[0] if rows else None

    async def _lookup(
        self, action: str, sql: str, params: Sequence[Any], parse: Callable[[list[Row]], T]
    ) -> T:
        if _has_nul(params):
            return parse([])
        with translated(action):
            try:  # keystile.flights.within: no task needed, no wait for a silent server
                rows = await within(self._read(sql, params), LOOKUP_TIMEOUT)
            except TimeoutError:
                raise StoreUnavailable(f"{action}: no answer within {LOOKUP_TIMEOUT} s") from None
        return parse(rows)

    async def _columns(self, table: str) -> list[str]:
        rows = await self._fetch(
            f"reading the columns of {table}",
            "SELECT column_name FROM information_schema.columns WHERE table_schema ="
            " current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return [row[0] for row in rows]

    async def _copied(self, conn: PgConn, table: str) -> None:
        if table == "audit_log":  # its sequence must go on after the ids copied in
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('audit_log', 'seq'),"
                " (SELECT coalesce(max(seq), 0) + 1 FROM audit_log), false)"
            )

    async def follow(self, wake: Callable[[], None], lost: Callable[[], None]) -> None:
        """Listen for changes until cancelled: ``wake()`` on each notification,
        ``lost()`` when the listening connection went away (then listen again)."""
        attempt = 0
        while True:
            try:
                conn = await asyncpg.connect(
                    self.url,
                    timeout=CONNECT_TIMEOUT,  # named so in pg_stat_activity
                    server_settings={"application_name": f"keystile-listen {self.schema}"[:63]},
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if attempt == 0:
                    log.error("cannot listen for changes on %s: %s", self.describe(), exc)
                await asyncio.sleep(RECONNECT[min(attempt, len(RECONNECT) - 1)])
                attempt += 1
                continue
            if attempt:
                log.info("listening for changes on %s again", self.describe())
            attempt = 0
            try:
                await self._listen(conn, wake)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=1))
            log.error("the connection listening for changes on %s was lost; caches flushed",
                      self.describe())  # fmt: skip
            lost()

    async def _listen(self, conn: asyncpg.Connection, wake: Callable[[], None]) -> None:
        """Hold ``conn`` listening until it fails (returns) or the task is cancelled."""
        ended = asyncio.Event()
        conn.add_termination_listener(lambda _: ended.set())
        try:
            await within(conn.add_listener(self.channel, lambda *_: wake()), KEEPALIVE)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return
        wake()  # anything committed before we listened
        while not ended.is_set() and not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), KEEPALIVE)
                return
            try:  # a silent network loses notifications without closing anything
                await conn.fetchval("SELECT 1", timeout=KEEPALIVE)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return


async def migrate(conn: asyncpg.Connection, target: int | None = None) -> int:
    """Bring the schema up to ``target`` (default: the newest), one transaction,
    under the writers' lock (replicas starting together migrate once)."""
    pending = migrations("postgresql")
    target = len(pending) if target is None else target
    async with conn.transaction():
        await conn.execute(_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY)")
        version = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
        if version > len(pending):
            raise StoreError(
                f"database schema version {version} is newer than this keystile "
                f"({len(pending)}): upgrade keystile"
            )
        for migration in pending[version:target]:
            await conn.execute(migration.sql)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)",
                               migration.version)  # fmt: skip
    return max(version, target)


class PostgresStore(Store, PostgresBase):
    """The store in a PostgreSQL database (the schema first on the URL's search_path)."""

    @classmethod
    async def connect(cls, url: str) -> PostgresStore:
        pool, schema = await cls._open_pool(url)
        return cls(url, pool, schema)
