"""Key records in SQL: lookups, filtered listings, changes (each audited)."""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from keystile.core.errors import AtCapacity, InvalidInput, NotFound
from keystile.store.records import COLUMNS, KeyRecord, TeamPolicy
from keystile.store.sql import Audit, Conn, Row, SQLBase

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM keys"
_INSERT = f"INSERT INTO keys ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
UPDATABLE = frozenset(COLUMNS) - {"id", "key_hash", "hash_scheme", "display_prefix", "created_at"}
Groups = tuple[tuple[str, str, tuple[str, ...]], ...]

# SQL for each state; "?" is now.
STATE_SQL = {
    "deleted": ("deleted_at IS NOT NULL", 0),
    "revoked": ("deleted_at IS NULL AND revoked_at IS NOT NULL", 0),
    "disabled": ("deleted_at IS NULL AND revoked_at IS NULL AND enabled = 0", 0),
    "expired": ("deleted_at IS NULL AND revoked_at IS NULL AND enabled = 1"
                " AND expires_at IS NOT NULL AND expires_at <= ?", 1),
    "active": ("deleted_at IS NULL AND revoked_at IS NULL AND enabled = 1"
               " AND (expires_at IS NULL OR expires_at > ?)", 1),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class KeyFilter:
    include_inactive: bool = False
    state: str | None = None
    owner: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    group_id: str | None = None
    name: str | None = None  # substring, case-insensitive
    expires_before: float | None = None  # has an expiry, at or before this instant
    unused_since: float | None = None  # last used (or, never used, created) before this
    cursor: str | None = None
    limit: int | None = None


def encode_cursor(record: KeyRecord) -> str:
    return base64.urlsafe_b64encode(f"{record.created_at!r}|{record.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created, _, key_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return float(created), key_id
    except (ValueError, UnicodeError):
        raise InvalidInput("cursor", f"{cursor!r} is not a cursor from a previous page") from None


def _group(group_id: str, name: str, scopes: str) -> tuple[str, str, tuple[str, ...]]:
    return group_id, name, tuple(orjson.loads(scopes))


def _team(team_id: str, limits: str, ips: str | None, credential: str | None) -> TeamPolicy:
    return TeamPolicy(
        team_id,
        orjson.loads(limits),
        None if ips is None else tuple(orjson.loads(ips)),
        credential,
    )


# One statement: a row per group of the key (one with NULLs if it has none), the
# team on each. Half the time of reading the groups apart, on the request path.
_LOOKUP = (
    f"SELECT {', '.join('k.' + column for column in COLUMNS)}, g.id, g.name, g.scopes,"
    " t.id, t.limits, t.allowed_ips, t.credential, u.disabled_at FROM keys k"
    " LEFT JOIN key_groups kg ON kg.key_id = k.id LEFT JOIN groups g ON g.id = kg.group_id"
    " LEFT JOIN users u ON u.id = k.user_id LEFT JOIN teams t ON t.id = u.team_id"
    " WHERE k.key_hash = ? ORDER BY g.name"
)
_N = len(COLUMNS)


def _key_of(rows: list[Row]) -> KeyRecord | None:
    """The record in the rows of ``_LOOKUP``."""
    if not rows:
        return None
    first = rows[0]
    groups = tuple(_group(*row[_N : _N + 3]) for row in rows if row[_N] is not None)
    team = None if first[_N + 3] is None else _team(*first[_N + 3 : _N + 7])
    record = KeyRecord.from_row(first[:_N], groups, team)
    # a disabled user's keys stop with them (the record itself stays as it was)
    return record if first[_N + 7] is None else replace(record, enabled=False)


class KeyStore(SQLBase):
    async def _groups_of(
        self, key_ids: Sequence[str], conn: Conn | None = None
    ) -> dict[str, Groups]:
        if not key_ids:
            return {}
        marks = ", ".join("?" * len(key_ids))
        rows = await self._fetch(
            "reading key groups",
            "SELECT kg.key_id, g.id, g.name, g.scopes FROM key_groups kg"
            f" JOIN groups g ON g.id = kg.group_id WHERE kg.key_id IN ({marks}) ORDER BY g.name",
            list(key_ids),
            conn,
        )
        found: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}
        for key_id, group_id, name, scopes in rows:
            found.setdefault(key_id, []).append(_group(group_id, name, scopes))
        return {key_id: tuple(groups) for key_id, groups in found.items()}

    async def _teams_of(
        self, user_ids: Sequence[str], conn: Conn | None = None
    ) -> dict[str, TeamPolicy]:
        if not user_ids:
            return {}
        marks = ", ".join("?" * len(user_ids))
        rows = await self._fetch(
            "reading key teams",
            "SELECT u.id, t.id, t.limits, t.allowed_ips, t.credential FROM users u"
            f" JOIN teams t ON t.id = u.team_id WHERE u.id IN ({marks})",
            list(user_ids),
            conn,
        )
        return {row[0]: _team(*row[1:]) for row in rows}

    async def _records(self, rows: list[Row], conn: Conn | None = None) -> list[KeyRecord]:
        """Records with their groups and team (read on ``conn`` inside a transaction)."""
        groups = await self._groups_of([row[0] for row in rows], conn)
        user_index = COLUMNS.index("user_id")
        user_ids = sorted({r[user_index] for r in rows if r[user_index]})
        teams = await self._teams_of(user_ids, conn)
        return [KeyRecord.from_row(row, groups.get(row[0], ()), teams.get(row[user_index]))
                for row in rows]  # fmt: skip

    async def get_key(self, key_id: str) -> KeyRecord:
        rows = await self._fetch(f"reading key {key_id}", f"{_SELECT} WHERE id = ?", (key_id,))
        if not rows:
            raise NotFound(f"no key with id {key_id!r}")
        return (await self._records(rows))[0]

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        """The request path's lookup: a few indexed reads on the lookup thread, in
        one trip. Raises StoreUnavailable, never waiting longer than LOOKUP_TIMEOUT,
        when the store does not answer in time."""
        return await self._lookup("looking up a key", _LOOKUP, (key_hash,), _key_of)

    async def list_keys(
        self, *, include_inactive: bool = False, owner: str | None = None, now: float = 0.0
    ) -> list[KeyRecord]:
        """Keys in creation order; by default only those that can still authenticate."""
        return await self.find_keys(KeyFilter(include_inactive, owner=owner), now)

    async def find_keys(self, query: KeyFilter, now: float) -> list[KeyRecord]:
        where: list[str] = []
        params: list[Any] = []
        state = query.state or (None if query.include_inactive else "active")
        if state is not None:
            if state not in STATE_SQL:
                raise InvalidInput("state", f"{state!r} is not one of {sorted(STATE_SQL)}")
            sql, uses_now = STATE_SQL[state]
            where.append(f"({sql})")
            params.extend([now] * uses_now)
        for column, value in (("owner", query.owner), ("user_id", query.user_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.team_id is not None:
            where.append("user_id IN (SELECT id FROM users WHERE team_id = ?)")
            params.append(query.team_id)
        if query.group_id is not None:
            where.append("id IN (SELECT key_id FROM key_groups WHERE group_id = ?)")
            params.append(query.group_id)
        if query.name:
            escaped = query.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("lower(name) LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped.lower()}%")
        if query.expires_before is not None:
            where.append("expires_at IS NOT NULL AND expires_at <= ?")
            params.append(query.expires_before)
        if query.unused_since is not None:
            where.append("coalesce(last_used_at, created_at) < ?")
            params.append(query.unused_since)
        if query.cursor:
            created, key_id = decode_cursor(query.cursor)
            where.append("(created_at > ? OR (created_at = ? AND id > ?))")
            params.extend([created, created, key_id])
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at, id"
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        return await self._records(await self._fetch("listing keys", sql, params))

    async def key_hashes(self, after: str = "", limit: int = 50_000) -> list[str]:
        """Stored key hashes in order, the first ``limit`` after ``after`` (paging)."""
        rows = await self._fetch(
            "reading key hashes",
            "SELECT key_hash FROM keys WHERE key_hash > ? ORDER BY key_hash LIMIT ?",
            (after, limit),
        )
        return [row[0] for row in rows]

    async def has_imported_keys(self) -> bool:
        rows = await self._fetch(
            "checking for imported keys",
            "SELECT 1 FROM keys WHERE origin = 'imported' AND deleted_at IS NULL LIMIT 1",
        )
        return bool(rows)

    async def has_token_budgets(self) -> bool:
        """Whether any live key or any team has a token budget (tokens_per_* limit)."""
        rows = await self._fetch(
            "checking for token budgets",
            "SELECT 1 FROM keys WHERE deleted_at IS NULL AND limits LIKE '%\"tokens_per_%'"
            " UNION ALL SELECT 1 FROM teams WHERE limits LIKE '%\"tokens_per_%' LIMIT 1",
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

    async def add_usage(
        self,
        counts: Mapping[tuple[str, int, str, str], int],
        last_used: Mapping[str, float],
        tokens: Mapping[tuple[str, int, str], int] | None = None,
    ) -> None:
        """Add request counts, tokens reported per (key, hour, route), and raise
        last-used times, in one transaction."""
        async with self._transaction("recording usage") as conn:
            if tokens:
                await conn.executemany(
                    "INSERT INTO usage (key_id, hour, route, outcome, count, tokens)"
                    " VALUES (?, ?, ?, 'allow', 0, ?)"
                    " ON CONFLICT (key_id, hour, route, outcome) DO UPDATE"
                    " SET tokens = usage.tokens + excluded.tokens",
                    [(*key, count) for key, count in tokens.items()],
                )
            await conn.executemany(
                "INSERT INTO usage (key_id, hour, route, outcome, count) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (key_id, hour, route, outcome) DO UPDATE"
                " SET count = usage.count + excluded.count",
                [(*key, count) for key, count in counts.items()],
            )
            await conn.executemany(
                "UPDATE keys SET last_used_at = ? WHERE id = ?"
                " AND (last_used_at IS NULL OR last_used_at < ?)",
                [(at, key_id, at) for key_id, at in last_used.items()],
            )

    async def usage(self, key_id: str, since: float = 0.0) -> list[tuple[int, str, str, int]]:
        """(hour, route, outcome, count) rows for one key, oldest first."""
        rows = await self._fetch(
            "reading usage",
            "SELECT hour, route, outcome, count FROM usage WHERE key_id = ? AND hour >= ?"
            " ORDER BY hour, route, outcome",
            (key_id, math.ceil(since)),  # hours are whole seconds
        )
        return [(int(r[0]), r[1], r[2], int(r[3])) for r in rows]

    async def usage_of(
        self, key_ids: Sequence[str], since: float = 0.0
    ) -> list[tuple[str, int, str, str, int]]:
        """(key id, hour, route, outcome, count) rows of several keys, oldest first."""
        found = await self._usage_rows("key_id, hour, route, outcome, count", "", key_ids, since)
        rows = [(r[0], int(r[1]), r[2], r[3], int(r[4])) for r in found]
        return sorted(rows, key=lambda row: row[1])

    async def token_usage(
        self, key_ids: Sequence[str], since: float = 0.0
    ) -> list[tuple[str, int, str, int]]:
        """(key id, hour, route, tokens) rows with tokens reported, oldest first."""
        reported = " AND outcome = 'allow' AND tokens > 0"
        found = await self._usage_rows("key_id, hour, route, tokens", reported, key_ids, since)
        rows = [(r[0], int(r[1]), r[2], int(r[3])) for r in found]
        return sorted(rows, key=lambda row: (row[1], row[0], row[2]))

    async def _usage_rows(
        self, columns: str, where: str, key_ids: Sequence[str], since: float
    ) -> list[Row]:
        """Usage rows of several keys since ``since``, read 500 keys at a time."""
        rows: list[Row] = []
        for start in range(0, len(key_ids), 500):  # SQLite's bound on parameters
            chunk = list(key_ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            rows.extend(await self._fetch(
                "reading usage",
                f"SELECT {columns} FROM usage WHERE key_id IN ({marks}){where} AND hour >= ?",
                [*chunk, math.ceil(since)],  # hours are whole seconds
            ))  # fmt: skip
        return rows

    async def tokens_since(self, kind: str, owner_id: str, since: float) -> int:
        """Tokens reported for a key (or all keys of a team's users) since ``since``."""
        return await self._sum_usage("tokens", kind, owner_id, since)

    async def allowed_since(self, kind: str, owner_id: str, since: float) -> int:
        """Allowed requests of a key (or all keys of a team's users) since ``since``."""
        return await self._sum_usage("count", kind, owner_id, since)

    async def _sum_usage(self, column: str, kind: str, owner_id: str, since: float) -> int:
        if kind == "key":
            where, params = "key_id = ?", [owner_id]
        else:
            where = ("key_id IN (SELECT k.id FROM keys k JOIN users u ON u.id = k.user_id"
                     " WHERE u.team_id = ?)")  # fmt: skip
            params = [owner_id]
        rows = await self._fetch(
            "reading usage",
            f"SELECT coalesce(sum({column}), 0) FROM usage WHERE {where}"
            " AND outcome = 'allow' AND hour >= ?",
            [*params, int(since - since % 3600)],
        )
        return int(rows[0][0])

    async def insert_keys(self, records: Iterable[KeyRecord], audit: Audit | None = None,
                          *, at_most: tuple[str, str, int] | None = None) -> int:  # fmt: skip
        """Insert records in one transaction; a duplicate hash or id raises Conflict.

        ``at_most`` = (user id, metadata source, N): the user's active keys of that
        source are counted in the same transaction, and :class:`AtCapacity` raised if
        they are N already. Writers take turns (SQLite's one writer, PostgreSQL's
        advisory lock), so "count, then insert" holds across workers and replicas."""
        records = list(records)
        async with self._transaction("storing keys") as conn:
            if at_most is not None:
                user_id, source, most = at_most
                row = await self._one(
                    conn,
                    "SELECT count(*) FROM keys WHERE user_id = ? AND deleted_at IS NULL"
                    " AND revoked_at IS NULL AND enabled = 1 AND (expires_at IS NULL OR"
                    " expires_at > ?) AND metadata LIKE ?",
                    (user_id, time.time(), f'%"source":"{source}"%'),
                )
                if row is not None and int(row[0]) + len(records) > most:
                    raise AtCapacity(f"user {user_id} has {row[0]} active {source} keys")
            await conn.executemany(_INSERT, [record.to_row() for record in records])
            for record in records:
                await self._audit(conn, audit, "key", record.id, None, record.public(time.time()))
        return len(records)

    async def update_key(
        self, key_id: str, changes: dict[str, Any], audit: Audit | None = None
    ) -> KeyRecord:
        """Apply ``changes`` (column -> value) to one key and return the new record."""
        async with self._transaction(f"updating key {key_id}") as conn:
            return await self._update(conn, key_id, changes, audit)

    async def replace_key(
        self, old_id: str, old_changes: dict[str, Any], new: KeyRecord, audit: Audit | None = None
    ) -> tuple[KeyRecord, KeyRecord]:
        """Store ``new`` and change the old key, atomically (rotation)."""
        async with self._transaction(f"rotating key {old_id}") as conn:
            await conn.execute(_INSERT, new.to_row())
            await conn.execute(
                "INSERT INTO key_groups (key_id, group_id)"
                " SELECT ?, group_id FROM key_groups WHERE key_id = ?",
                (new.id, old_id),
            )
            old = await self._update(conn, old_id, old_changes, audit)
            new = replace(new, groups=old.groups, team=old.team)
            await self._audit(conn, audit, "key", new.id, None, new.public(time.time()))
        return old, new

    async def _update(
        self, conn: Conn, key_id: str, changes: dict[str, Any], audit: Audit | None
    ) -> KeyRecord:
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise TypeError(f"columns cannot be updated: {sorted(unknown)}")
        rows = await self._fetch(
            f"reading key {key_id}", f"{_SELECT} WHERE id = ?", (key_id,), conn
        )
        if not rows:
            raise NotFound(f"no key with id {key_id!r}")
        record = (await self._records(rows, conn))[0]
        if not changes:
            return record
        updated = replace(record, **changes)
        row_values = dict(zip(COLUMNS, updated.to_row(), strict=True))
        assignments = ", ".join(f"{column} = ?" for column in changes)
        params = [row_values[column] for column in changes]
        await conn.execute(f"UPDATE keys SET {assignments} WHERE id = ?", (*params, key_id))
        now = time.time()
        await self._audit(conn, audit, "key", key_id, record.public(now), updated.public(now))
        return updated
