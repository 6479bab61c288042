"""Store plumbing: connections, transactions, error translation, audit writes.

One connection writes (every write in ``BEGIN IMMEDIATE`` under a lock, so writers
never meet a read-to-write upgrade deadlock), another reads; WAL lets them, and
other processes such as the CLI, work side by side. sqlite errors become
:mod:`keystile.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from keystile.errors import Conflict, StoreError, StoreUnavailable
from keystile.store.migrate import migrate

BUSY_TIMEOUT_MS = 5000
INLINE_BUSY_TIMEOUT_MS = 100  # the inline reader blocks the event loop while it waits


@dataclass(frozen=True, slots=True)
class Audit:
    """Who does what; the store adds the target and before/after in the same transaction."""

    actor: str
    action: str


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


def dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class StoreBase:
    """Three connections to one SQLite file: a writer and a reader on aiosqlite's
    threads, and an inline reader for the one query on the request path.

    A key lookup by hash is a single indexed read of ~20 us; handing it to a
    thread and back costs several times that, so it runs on the event loop's
    own thread (read-only, with a short busy timeout). Everything else, which
    may be long (listings, writes), goes through aiosqlite.
    """

    def __init__(
        self,
        path: Path,
        reader: aiosqlite.Connection,
        writer: aiosqlite.Connection,
        inline: sqlite3.Connection,
    ) -> None:
        self.path = path
        self._reader = reader
        self._writer = writer
        self._inline = inline
        self._write_lock = asyncio.Lock()

    @classmethod
    async def _connect(
        cls, path: Path | str
    ) -> tuple[Path, aiosqlite.Connection, aiosqlite.Connection, sqlite3.Connection]:
        path = Path(path)
        await asyncio.to_thread(migrate_file, path)
        with translated(f"opening {path}"):
            reader = await aiosqlite.connect(path, isolation_level=None)
            writer = await aiosqlite.connect(path, isolation_level=None)
            for conn in (reader, writer):
                await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                await conn.execute("PRAGMA synchronous = NORMAL")
            inline = sqlite3.connect(path, isolation_level=None)
            inline.execute(f"PRAGMA busy_timeout = {INLINE_BUSY_TIMEOUT_MS}")
            inline.execute("PRAGMA query_only = 1")
        return path, reader, writer, inline

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            with translated("closing the store"):
                await conn.close()
        self._inline.close()

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers a query."""
        await self._fetch("checking the store", "SELECT 1 FROM keys LIMIT 1")

    async def _fetch(
        self,
        action: str,
        sql: str,
        params: Sequence[Any] = (),
        conn: aiosqlite.Connection | None = None,
        inline: bool = False,
    ) -> list[sqlite3.Row]:
        """Rows on the reader, on ``conn`` (the writer, inside a transaction), or
        ``inline`` on the event loop's thread (short indexed reads only)."""
        with translated(action):
            if inline:
                return self._inline.execute(sql, params).fetchall()
            # one trip to the connection's thread, not three
            return list(await (conn or self._reader).execute_fetchall(sql, params))

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            with translated(action):
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield self._writer
                except BaseException:
                    await self._writer.execute("ROLLBACK")
                    raise
                await self._writer.execute("COMMIT")

    @staticmethod
    async def _one(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> Any:
        async with conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    @staticmethod
    async def _audit(
        conn: aiosqlite.Connection,
        audit: Audit | None,
        target_type: str,
        target_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        if audit is None:
            return
        await conn.execute(
            "INSERT INTO audit_log (at, actor, action, target_type, target_id, before, after)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), audit.actor, audit.action, target_type, target_id, dumps(before),
             dumps(after)),
        )  # fmt: skip
