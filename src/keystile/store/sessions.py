"""Browser sessions in SQL: stored by the hash of their token, never the token.

The request path reads a session (with its user, the user's groups and team)
in one trip to the lookup thread, like a key. Revoking a session, or changing
its user, writes the change log (triggers), so every server's cache drops it
within one poll.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import NamedTuple

import orjson

from keystile.core.errors import NotFound
from keystile.store.records import Session, TeamPolicy
from keystile.store.sql import Audit, Row, SQLBase

_SESSION = ("SELECT id, user_id, created_at, last_seen_at, expires_at, revoked_at, client_ip,"
            " user_agent FROM sessions")  # fmt: skip


class StoredSession(NamedTuple):
    """What the request path needs about a session and the person behind it."""

    id: str
    token_hash: str
    created_at: float
    last_seen_at: float
    expires_at: float
    revoked_at: float | None
    user_id: str
    name: str
    email: str | None
    role: str
    disabled_at: float | None
    groups: tuple[tuple[str, str, tuple[str, ...]], ...]
    team: TeamPolicy | None


_LOOKUP = (
    "SELECT s.id, s.token_hash, s.created_at, s.last_seen_at, s.expires_at, s.revoked_at,"
    " u.id, u.external_id, u.email, u.role, u.disabled_at, t.id, t.limits, t.allowed_ips,"
    " g.id, g.name, g.scopes, t.credential FROM sessions s JOIN users u ON u.id = s.user_id"
    " LEFT JOIN teams t ON t.id = u.team_id"
    " LEFT JOIN user_groups ug ON ug.user_id = u.id LEFT JOIN groups g ON g.id = ug.group_id"
    " WHERE s.token_hash = ? ORDER BY g.name"
)


def _session_of(rows: list[Row]) -> StoredSession | None:
    """The session in the rows of ``_LOOKUP``."""
    if not rows:
        return None
    first = rows[0]
    team = None
    if first[11] is not None:
        ips = None if first[13] is None else tuple(orjson.loads(first[13]))
        team = TeamPolicy(first[11], orjson.loads(first[12]), ips, first[17])
    groups = tuple((row[14], row[15], tuple(orjson.loads(row[16])))
                   for row in rows if row[14] is not None)  # fmt: skip
    return StoredSession._make((*first[:11], groups, team))


def _session(row: Row) -> Session:
    return Session(*row)


class SessionStore(SQLBase):
    async def find_session(self, token_hash: str) -> StoredSession | None:
        """The request path's read of a session (bounded like a key lookup)."""
        return await self._lookup("looking up a session", _LOOKUP, (token_hash,), _session_of)

    async def insert_session(
        self, session: Session, token_hash: str, audit: Audit | None = None
    ) -> Session:
        async with self._transaction("starting a session") as conn:
            await conn.execute(
                "INSERT INTO sessions (id, token_hash, user_id, created_at, last_seen_at,"
                " expires_at, client_ip, user_agent) VALUES (?,?,?,?,?,?,?,?)",
                (session.id, token_hash, session.user_id, session.created_at,
                 session.last_seen_at, session.expires_at, session.client_ip,
                 session.user_agent),
            )  # fmt: skip
            await self._audit(conn, audit, "session", session.id, None, session.public())
        return session

    async def list_sessions(self, user_id: str | None = None, *, now: float) -> list[Session]:
        """Sessions that can still be used (not revoked, not past their absolute end)."""
        where, params = "revoked_at IS NULL AND expires_at > ?", [now]
        if user_id is not None:
            where += " AND user_id = ?"
            params.append(user_id)  # type: ignore[arg-type]
        sql = f"{_SESSION} WHERE {where} ORDER BY created_at"
        rows = await self._fetch("listing sessions", sql, params)
        return [_session(r) for r in rows]

    async def revoke_session(
        self, session_id: str, audit: Audit, *, token_hash: str | None = None
    ) -> Session:
        """End one session (by id, or by its token's hash at logout)."""
        column, value = ("token_hash", token_hash) if token_hash else ("id", session_id)
        async with self._transaction("ending a session") as conn:
            row = await self._one(conn, f"{_SESSION} WHERE {column} = ?", (value,))
            if row is None:
                raise NotFound(f"no session with id {session_id!r}")
            before = _session(row)
            if before.revoked_at is None:
                at = time.time()
                await conn.execute("UPDATE sessions SET revoked_at = ? WHERE id = ?",
                                   (at, before.id))  # fmt: skip
                after = replace(before, revoked_at=at)
                await self._audit(conn, audit, "session", before.id, before.public(),
                                  after.public())  # fmt: skip
                return after
        return before

    async def revoke_user_sessions(self, user_id: str, audit: Audit) -> int:
        """End every session of a user; returns how many were open."""
        async with self._transaction(f"ending the sessions of {user_id}") as conn:
            cursor = await conn.execute(
                "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                (time.time(), user_id),
            )
            count = cursor.rowcount
            if count:
                await self._audit(conn, audit, "user", user_id, None, {"sessions_ended": count})
        return int(count)

    async def touch_sessions(self, seen: Mapping[str, float]) -> None:
        """Raise last-seen times (the idle timeout's clock), in one transaction."""
        if not seen:
            return
        async with self._transaction("recording session activity") as conn:
            await conn.executemany(
                "UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?",
                [(at, session_id, at) for session_id, at in seen.items()],
            )

    async def session_hashes(self, after: str = "", limit: int = 50_000) -> list[str]:
        """Token hashes of sessions not revoked, in order (the cache's filter)."""
        rows = await self._fetch(
            "reading session hashes",
            "SELECT token_hash FROM sessions WHERE revoked_at IS NULL AND token_hash > ?"
            " ORDER BY token_hash LIMIT ?",
            (after, limit),
        )
        return [row[0] for row in rows]

    async def prune_sessions(self, before: float) -> int:
        """Delete sessions that ended before ``before`` (kept a while for audit)."""
        async with self._transaction("pruning sessions") as conn:
            cursor = await conn.execute(
                "DELETE FROM sessions WHERE expires_at < ? OR revoked_at < ?", (before, before)
            )
        return int(cursor.rowcount)
