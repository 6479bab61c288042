"""What the store's SQL modules ask of a backend (SQLite or PostgreSQL).

The SQL in ``keys``, ``accounts``, ``sessions`` and ``oidc`` is written once, in
the dialect both engines speak (``?`` placeholders, ``ON CONFLICT``,
``RETURNING``, no engine-only functions); each backend supplies the plumbing
below: reads, one write transaction at a time, the request path's bounded
lookup, and error translation into :mod:`keystile.errors`.

A connection handed out by ``_transaction`` (``Conn``) answers ``execute`` (its
result has ``rowcount``) and ``executemany``, like a DB-API cursor would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

T = TypeVar("T")
Conn = Any  # aiosqlite.Connection or postgres.PgConn: execute, executemany
Row = Sequence[Any]  # sqlite3.Row or asyncpg.Record: indexable, sliceable


@dataclass(frozen=True, slots=True)
class Audit:
    """Who does what; the store adds the target and before/after in the same transaction."""

    actor: str
    action: str


def dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class SQLBase:
    """The primitives every backend provides; the SQL modules use nothing else."""

    lost: str | None = None  # why the store no longer answers (SQLite: its file deleted)

    def describe(self) -> str:
        """Where the store is, for logs (never with a password)."""
        raise NotImplementedError

    def file_changed(self) -> str | None:
        """SQLite: whether the file was deleted or replaced under us. Others: None."""
        return None

    async def reopen(self) -> None:
        """SQLite: open the file now at the path (replaced under us)."""
        raise NotImplementedError

    async def detach(self, why: str) -> None:
        """SQLite: stop answering (every call raises StoreUnavailable naming ``why``)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers a query."""
        await self._fetch("checking the store", "SELECT 1 FROM keys LIMIT 1")

    async def _fetch(
        self, action: str, sql: str, params: Sequence[Any] = (), conn: Conn | None = None
    ) -> list[Row]:
        """Rows of a read, or of a read on ``conn`` inside a transaction."""
        raise NotImplementedError

    def _transaction(self, action: str) -> AbstractAsyncContextManager[Conn]:
        """One write transaction at a time across every process sharing the store."""
        raise NotImplementedError

    async def _one(self, conn: Conn, sql: str, params: Sequence[Any]) -> Row | None:
        """The first row of a statement run on ``conn`` inside a transaction."""
        raise NotImplementedError

    async def _lookup(
        self, action: str, sql: str, params: Sequence[Any], parse: Callable[[list[Row]], T]
    ) -> T:
        """The request path's read: ``parse(rows)`` within the lookup bound, or
        StoreUnavailable (never a wait longer than that bound)."""
        raise NotImplementedError

    async def _columns(self, table: str) -> list[str]:
        """The columns of ``table``, in order (``keystile store copy``)."""
        raise NotImplementedError

    async def _copied(self, conn: Conn, table: str) -> None:
        """After rows were copied into ``table`` with their ids (sequences follow)."""

    async def follow(self, wake: Callable[[], None], lost: Callable[[], None]) -> None:
        """Until cancelled: call ``wake()`` when another process changed the store,
        ``lost()`` when changes may have been missed. Backends that cannot tell
        (SQLite) return at once: the change-log poll alone follows them."""

    async def _audit(
        self,
        conn: Conn,
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
