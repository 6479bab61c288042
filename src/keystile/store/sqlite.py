"""The SQLite key store (aiosqlite). All SQL lives in this package.

One connection writes (every write in ``BEGIN IMMEDIATE`` under a lock, so writers
never meet a read-to-write upgrade deadlock), another reads; WAL lets them, and
other processes such as the CLI, work side by side. sqlite errors become
:mod:`keystile.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosqlite

from keystile.errors import Conflict, NotFound, StoreError, StoreUnavailable
from keystile.store.migrate import migrate
from keystile.store.records import COLUMNS, KeyRecord

BUSY_TIMEOUT_MS = 5000
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM keys"
_INSERT = f"INSERT INTO keys ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
UPDATABLE = frozenset(COLUMNS) - {"id", "key_hash", "hash_scheme", "display_prefix", "created_at"}


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
    conn.execute("PRAGMA foreign_keys = ON")


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


class Store:
    """Key records in one SQLite file."""

    def __init__(self, path: Path, reader: aiosqlite.Connection, writer: aiosqlite.Connection):
        self.path = path
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str) -> Store:
        """Open (creating and migrating if needed) the store at ``path``."""
        path = Path(path)
        await asyncio.to_thread(migrate_file, path)
        with translated(f"opening {path}"):
            reader = await aiosqlite.connect(path, isolation_level=None)
            writer = await aiosqlite.connect(path, isolation_level=None)
            for conn in (reader, writer):
                await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                await conn.execute("PRAGMA synchronous = NORMAL")
        return cls(path, reader, writer)

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            with translated("closing the store"):
                await conn.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------

    async def _fetch(self, action: str, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with translated(action):
            async with self._reader.execute(sql, params) as cursor:
                return list(await cursor.fetchall())

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

    # -- reads ------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers a query."""
        await self._fetch("checking the store", "SELECT 1 FROM keys LIMIT 1")

    async def get_key(self, key_id: str) -> KeyRecord:
        rows = await self._fetch(f"reading key {key_id}", f"{_SELECT} WHERE id = ?", (key_id,))
        if not rows:
            raise NotFound(f"no key with id {key_id!r}")
        return KeyRecord.from_row(rows[0])

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        rows = await self._fetch("looking up a key", f"{_SELECT} WHERE key_hash = ?", (key_hash,))
        return KeyRecord.from_row(rows[0]) if rows else None

    async def list_keys(
        self, *, include_inactive: bool = False, owner: str | None = None, now: float = 0.0
    ) -> list[KeyRecord]:
        """Keys in creation order; by default only those that can still authenticate."""
        where: list[str] = []
        params: list[object] = []
        if not include_inactive:
            where.append(
                "deleted_at IS NULL AND revoked_at IS NULL AND enabled = 1 "
                "AND (expires_at IS NULL OR expires_at > ?)"
            )
            params.append(now)
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
        rows = await self._fetch("listing keys", sql + " ORDER BY created_at, id", params)
        return [KeyRecord.from_row(row) for row in rows]

    async def has_imported_keys(self) -> bool:
        rows = await self._fetch(
            "checking for imported keys",
            "SELECT 1 FROM keys WHERE origin = 'imported' AND deleted_at IS NULL LIMIT 1",
        )
        return bool(rows)

    async def last_event(self) -> int:
        rows = await self._fetch("reading the change log", "SELECT max(seq) FROM key_events")
        return int(rows[0][0] or 0)

    async def events_since(self, seq: int) -> tuple[int, list[str]]:
        """Key hashes changed after ``seq``, and the newest seq seen."""
        rows = await self._fetch(
            "reading the change log",
            "SELECT seq, key_hash FROM key_events WHERE seq > ? ORDER BY seq",
            (seq,),
        )
        if not rows:
            return seq, []
        return int(rows[-1][0]), [row[1] for row in rows]

    # -- writes -----------------------------------------------------------------

    async def insert_keys(self, records: Iterable[KeyRecord]) -> int:
        """Insert records in one transaction; a duplicate hash or id raises Conflict."""
        rows = [record.to_row() for record in records]
        async with self._transaction("storing keys") as conn:
            await conn.executemany(_INSERT, rows)
        return len(rows)

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord:
        """Apply ``changes`` (column -> value) to one key and return the new record."""
        async with self._transaction(f"updating key {key_id}") as conn:
            return await self._update(conn, key_id, changes)

    async def replace_key(
        self, old_id: str, old_changes: dict[str, Any], new: KeyRecord
    ) -> tuple[KeyRecord, KeyRecord]:
        """Store ``new`` and change the old key, atomically (rotation)."""
        async with self._transaction(f"rotating key {old_id}") as conn:
            await conn.execute(_INSERT, new.to_row())
            old = await self._update(conn, old_id, old_changes)
        return old, new

    async def _update(
        self, conn: aiosqlite.Connection, key_id: str, changes: dict[str, Any]
    ) -> KeyRecord:
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise TypeError(f"columns cannot be updated: {sorted(unknown)}")
        async with conn.execute(f"{_SELECT} WHERE id = ?", (key_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"no key with id {key_id!r}")
        record = KeyRecord.from_row(row)
        if not changes:
            return record
        updated = replace(record, **changes)
        row_values = dict(zip(COLUMNS, updated.to_row(), strict=True))
        assignments = ", ".join(f"{column} = ?" for column in changes)
        params = [row_values[column] for column in changes]
        await conn.execute(f"UPDATE keys SET {assignments} WHERE id = ?", (*params, key_id))
        return updated
