"""``keystile store copy SRC DST``: everything in one store into another.

From SQLite to PostgreSQL (moving to replicas) or back (a laptop copy of
production), or between two of a kind. Every table but the change log (each
store writes its own, by trigger, as the rows arrive) and the schema version
(both stores are migrated to the newest on opening): teams, users, groups,
keys, memberships, sessions, usage, the audit log (with its sequence numbers),
idempotency records and OpenID Connect sign-ins under way.

Rows are upserted by primary key, a table per transaction, parents before
children: a second run changes nothing, and a run after more use of the
source brings the destination up to it. Afterwards every source row is read
back from the destination and compared, value by value; the counts printed
are of rows verified so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keystile.core.errors import StoreError
from keystile.store.store import Store

# (table, primary key) with parents before the tables that refer to them
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("teams", ("id",)),
    ("users", ("id",)),
    ("groups", ("id",)),
    ("keys", ("id",)),
    ("key_groups", ("key_id", "group_id")),
    ("user_groups", ("user_id", "group_id")),
    ("sessions", ("id",)),
    ("usage", ("key_id", "hour", "route", "outcome")),
    ("audit_log", ("seq",)),
    ("idempotency", ("key",)),
    ("oidc_pending", ("state_hash",)),
)
NOT_COPIED = frozenset({"key_events", "schema_version"})  # each store's own
BATCH = 1000


@dataclass(frozen=True, slots=True)
class Copied:
    table: str
    source: int  # rows in the source, each found equal in the destination
    destination: int  # rows in the destination afterwards (more: it had others)


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    others = [column for column in columns if column not in key]
    action = ("DO NOTHING" if not others else
              "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in others))  # fmt: skip
    return (f"INSERT INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT ({', '.join(key)}) {action}")  # fmt: skip


async def _rows(store: Store, table: str, columns: Sequence[str], key: Sequence[str]) -> list[Any]:
    sql = f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(key)}"
    return [tuple(row) for row in await store._fetch(f"reading {table}", sql)]


async def copy_store(
    source: Store, destination: Store, progress: Callable[[Copied], None] = lambda _: None
) -> list[Copied]:
    """Copy every table of ``source`` into ``destination``; verify; the counts."""
    done = []
    for table, key in TABLES:
        columns = await source._columns(table)
        theirs = await destination._columns(table)
        if sorted(columns) != sorted(theirs):
            raise StoreError(f"table {table} differs between the stores ({columns} / {theirs}):"
                             " run the same keystile version on both")  # fmt: skip
        rows = await _rows(source, table, columns, key)
        async with destination._transaction(f"copying {table}") as conn:
            for start in range(0, len(rows), BATCH):
                await conn.executemany(upsert(table, columns, key), rows[start : start + BATCH])
            await destination._copied(conn, table)
        there = {row[: len(key)]: row for row in await _rows(destination, table, columns, key)}
        indexes = [columns.index(column) for column in key]
        for row in rows:
            found = there.get(tuple(row[i] for i in indexes))
            if found != row:
                raise StoreError(f"{table}: a row did not arrive as it was in the source"
                                 f" (key {tuple(row[i] for i in indexes)})")  # fmt: skip
        copied = Copied(table, len(rows), len(there))
        progress(copied)
        done.append(copied)
    return done
