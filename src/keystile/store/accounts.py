"""Teams, users, groups, key membership, the audit log and idempotency records."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from keystile.core.errors import Conflict, NotFound
from keystile.store.records import AuditEntry, Group, Team, User
from keystile.store.sql import Audit, Row, SQLBase, dumps


def _team(row: Row) -> Team:
    ips = None if row[5] is None else tuple(orjson.loads(row[5]))
    return Team(row[0], row[1], row[3], row[4], orjson.loads(row[2]), ips, row[6])


def _user(row: Row) -> User:
    return User(row[0], row[1], row[3], row[4], row[2], row[5], row[6], row[7], row[8])


def _group(row: Row) -> Group:
    return Group(row[0], row[1], row[3], row[4], tuple(orjson.loads(row[2])))


_PENDING = "pending"  # an idempotency row whose action is still running (no answer yet)
_END_SESSIONS = "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL"
_TEAM = "SELECT id, name, limits, created_at, updated_at, allowed_ips, credential FROM teams"
_USER = (
    "SELECT id, external_id, team_id, created_at, updated_at, role, email, password_hash,"
    " disabled_at FROM users"
)
_GROUP = "SELECT id, name, scopes, created_at, updated_at FROM groups"


_KINDS: dict[str, tuple[str, Callable[[Any], Any], str]] = {
    # kind: (select, row -> record, SET clause for its changeable columns)
    "team": (_TEAM, _team, "name = ?, limits = ?, allowed_ips = ?, credential = ?"),
    "user": (
        _USER,
        _user,
        "external_id = ?, team_id = ?, role = ?, email = ?, password_hash = ?, disabled_at = ?",
    ),
    "group": (_GROUP, _group, "name = ?, scopes = ?"),
}


def _changeable(kind: str, record: Any) -> tuple[Any, ...]:
    if kind == "team":
        ips = None if record.allowed_ips is None else list(record.allowed_ips)
        return (record.name, dumps(record.limits), dumps(ips), record.credential)
    if kind == "user":
        return (record.external_id, record.team_id, record.role, record.email,
                record.password_hash, record.disabled_at)  # fmt: skip
    return (record.name, dumps(list(record.scopes)))


class AccountStore(SQLBase):
    async def _get(self, kind: str, item_id: str) -> Any:
        select, parse, _ = _KINDS[kind]
        rows = await self._fetch(f"reading a {kind}", f"{select} WHERE id = ?", (item_id,))
        if not rows:
            raise NotFound(f"no {kind} with id {item_id!r}")
        return parse(rows[0])

    async def _change(
        self,
        kind: str,
        item_id: str,
        changes: dict[str, Any],
        audit: Audit,
        then: str | None = None,
    ) -> Any:
        """Update a team, user or group, audited with before and after; ``then``: one
        more statement (taking the id) in the same transaction."""
        select, parse, assignments = _KINDS[kind]
        async with self._transaction(f"updating {kind} {item_id}") as conn:
            row = await self._one(conn, f"{select} WHERE id = ?", (item_id,))
            if row is None:
                raise NotFound(f"no {kind} with id {item_id!r}")
            before = parse(row)
            after = replace(before, **changes, updated_at=time.time())
            await conn.execute(
                f"UPDATE {kind}s SET {assignments}, updated_at = ? WHERE id = ?",
                (*_changeable(kind, after), after.updated_at, item_id),
            )
            await self._audit(conn, audit, kind, item_id, before.public(), after.public())
            if then is not None:
                await conn.execute(then, (time.time(), item_id))
        return after

    # -- teams --------------------------------------------------------------------

    async def insert_team(self, team: Team, audit: Audit | None = None) -> Team:
        async with self._transaction(f"creating team {team.name!r}") as conn:
            await conn.execute(
                "INSERT INTO teams (id, name, limits, created_at, updated_at, allowed_ips,"
                " credential) VALUES (?,?,?,?,?,?,?)",
                (team.id, team.name, dumps(team.limits), team.created_at, team.updated_at,
                 dumps(None if team.allowed_ips is None else list(team.allowed_ips)),
                 team.credential),
            )  # fmt: skip
            await self._audit(conn, audit, "team", team.id, None, team.public())
        return team

    async def update_team(self, team_id: str, changes: dict[str, Any], audit: Audit) -> Team:
        team: Team = await self._change("team", team_id, changes, audit)
        return team

    async def get_team(self, team_id: str) -> Team:
        team: Team = await self._get("team", team_id)
        return team

    async def list_teams(self) -> list[Team]:
        return [_team(r) for r in await self._fetch("listing teams", f"{_TEAM} ORDER BY name")]

    # -- users --------------------------------------------------------------------

    async def insert_user(self, user: User, audit: Audit | None = None) -> User:
        async with self._transaction(f"creating user {user.external_id!r}") as conn:
            if user.team_id and not await self._one(
                conn, "SELECT 1 FROM teams WHERE id = ?", (user.team_id,)
            ):
                raise NotFound(f"no team with id {user.team_id!r}")
            if await self._one(conn, "SELECT 1 FROM users WHERE external_id = ?",
                               (user.external_id,)):  # fmt: skip
                raise Conflict(f"a user named {user.external_id!r} exists already")
            await conn.execute(
                "INSERT INTO users (id, external_id, team_id, created_at, updated_at, role,"
                " email, password_hash, disabled_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (user.id, user.external_id, user.team_id, user.created_at, user.updated_at,
                 user.role, user.email, user.password_hash, user.disabled_at),
            )  # fmt: skip
            await self._audit(conn, audit, "user", user.id, None, user.public())
        return user

    async def get_user(self, user_id: str) -> User:
        user: User = await self._get("user", user_id)
        return user

    async def find_user(self, name: str) -> User | None:
        """The user who signs in as ``name`` (their external id), or None."""
        rows = await self._fetch("reading a user", f"{_USER} WHERE external_id = ?", (name,))
        return _user(rows[0]) if rows else None

    async def update_user(self, user_id: str, changes: dict[str, Any], audit: Audit) -> User:
        """Change a user (name, team, role, email, password hash, disabled), audited
        without the password hash. Their sessions and keys see it through the change log."""
        if changes.get("team_id"):
            rows = await self._fetch("reading a team", "SELECT 1 FROM teams WHERE id = ?",
                                     (changes["team_id"],))  # fmt: skip
            if not rows:
                raise NotFound(f"no team with id {changes['team_id']!r}")
        # a new password or a disabled user: every session of theirs ends with it (an
        # attacker's stolen session must not outlive the reset, nor come back on enable)
        ends = "password_hash" in changes or changes.get("disabled_at") is not None
        user: User = await self._change("user", user_id, changes, audit,
                                        _END_SESSIONS if ends else None)  # fmt: skip
        return user

    async def list_users(self, team_id: str | None = None) -> list[User]:
        if team_id is None:
            rows = await self._fetch("listing users", f"{_USER} ORDER BY external_id")
        else:
            rows = await self._fetch(
                "listing users", f"{_USER} WHERE team_id = ? ORDER BY external_id", (team_id,)
            )
        return [_user(r) for r in rows]

    # -- groups -------------------------------------------------------------------

    async def insert_group(self, group: Group, audit: Audit | None = None) -> Group:
        async with self._transaction(f"creating group {group.name!r}") as conn:
            await conn.execute(
                "INSERT INTO groups (id, name, scopes, created_at, updated_at) VALUES (?,?,?,?,?)",
                (group.id, group.name, dumps(list(group.scopes)), group.created_at,
                 group.updated_at),
            )  # fmt: skip
            await self._audit(conn, audit, "group", group.id, None, group.public())
        return group

    async def update_group(self, group_id: str, changes: dict[str, Any], audit: Audit) -> Group:
        group: Group = await self._change("group", group_id, changes, audit)
        return group

    async def delete_group(self, group_id: str, audit: Audit) -> Group:
        """Delete a group; its keys lose what it granted (the change log tells every server)."""
        async with self._transaction(f"deleting group {group_id}") as conn:
            row = await self._one(conn, f"{_GROUP} WHERE id = ?", (group_id,))
            if row is None:
                raise NotFound(f"no group with id {group_id!r}")
            await conn.execute("DELETE FROM key_groups WHERE group_id = ?", (group_id,))
            await conn.execute("DELETE FROM user_groups WHERE group_id = ?", (group_id,))
            await conn.execute("DELETE FROM groups WHERE id = ?", (group_id,))
            await self._audit(conn, audit, "group", group_id, _group(row).public(), None)
        return _group(row)

    async def get_group(self, group_id: str) -> Group:
        group: Group = await self._get("group", group_id)
        return group

    async def list_groups(self) -> list[Group]:
        return [_group(r) for r in await self._fetch("listing groups", f"{_GROUP} ORDER BY name")]

    async def set_membership(
        self, key_id: str, group_id: str, member: bool, audit: Audit, kind: str = "key"
    ) -> bool:
        """Add or remove a key (or, with ``kind="user"``, a user: their sessions get the
        group's scopes) from a group; returns whether anything changed."""
        table, links = {"key": ("keys", "key_groups"), "user": ("users", "user_groups")}[kind]
        column = f"{kind}_id"
        async with self._transaction(f"changing group {group_id}") as conn:
            for source, item in ((table, key_id), ("groups", group_id)):
                if not await self._one(conn, f"SELECT 1 FROM {source} WHERE id = ?", (item,)):
                    raise NotFound(f"no {source[:-1]} with id {item!r}")
            if member:
                sql = (f"INSERT INTO {links} ({column}, group_id) VALUES (?, ?)"
                       " ON CONFLICT DO NOTHING")  # fmt: skip
            else:
                sql = f"DELETE FROM {links} WHERE {column} = ? AND group_id = ?"
            cursor = await conn.execute(sql, (key_id, group_id))
            changed = bool(cursor.rowcount > 0)
            if changed:
                change = {"group_id": group_id}
                before, after = (None, change) if member else (change, None)
                await self._audit(conn, audit, kind, key_id, before, after)
        return changed

    async def groups_of_user(self, user_id: str) -> list[Group]:
        rows = await self._fetch(
            "reading a user's groups",
            "SELECT g.id, g.name, g.scopes, g.created_at, g.updated_at FROM groups g"
            " JOIN user_groups ug ON ug.group_id = g.id WHERE ug.user_id = ? ORDER BY g.name",
            (user_id,),
        )
        return [_group(r) for r in rows]

    # -- audit log ----------------------------------------------------------------

    async def record_audit(
        self, audit: Audit, target_type: str, target_id: str, after: dict[str, Any]
    ) -> None:
        """An audit entry for something that changed nothing stored (a failed sign-in)."""
        async with self._transaction("writing the audit log") as conn:
            await self._audit(conn, audit, target_type, target_id, None, after)

    async def list_audit(
        self,
        *,
        target_type: str | None = None,
        target_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[AuditEntry]:
        where, params = ["seq > ?"], [after_seq]  # type: list[str], list[Any]
        for column, value in (("target_type", target_type), ("target_id", target_id),
                              ("actor", actor), ("action", action)):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        rows = await self._fetch(
            "reading the audit log",
            "SELECT seq, at, actor, action, target_type, target_id, before, after FROM audit_log"
            f" WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            [*params, limit],
        )
        return [
            AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5],
                       orjson.loads(r[6]) if r[6] else None, orjson.loads(r[7]) if r[7] else None)
            for r in rows
        ]  # fmt: skip

    # -- idempotency ----------------------------------------------------------------
    # A key's row holds the answer of the action it names, or _PENDING while that runs
    # (keystile.once: the one place that runs an action once per submission).

    async def claim(self, key: str) -> bool:
        """Take ``key`` for an action about to run (its answer still to come): True for
        the one caller that took it, False for every other (a duplicate)."""
        async with self._transaction("claiming an idempotency key") as conn:
            cursor = await conn.execute(
                "INSERT INTO idempotency (key, response, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (key, _PENDING, time.time()),
            )
            return bool(cursor.rowcount)

    async def settle(self, key: str, response: dict[str, Any]) -> None:
        """The answer of the action ``key`` was claimed for."""
        async with self._transaction("storing an idempotency answer") as conn:
            await conn.execute("UPDATE idempotency SET response = ? WHERE key = ?",
                               (dumps(response), key))  # fmt: skip

    async def release(self, key: str) -> None:
        """Give ``key`` back: its action failed, so a later submission may run it."""
        async with self._transaction("releasing an idempotency key") as conn:
            await conn.execute("DELETE FROM idempotency WHERE key = ? AND response = ?",
                               (key, _PENDING))  # fmt: skip

    async def claimed(self, key: str) -> tuple[bool, dict[str, Any] | None]:
        """(whether ``key`` is claimed, its answer once settled, else None)."""
        rows = await self._fetch(
            "reading an idempotency key", "SELECT response FROM idempotency WHERE key = ?", (key,)
        )
        if not rows:
            return False, None
        return True, None if rows[0][0] == _PENDING else orjson.loads(rows[0][0])

    async def remember(self, key: str, response: dict[str, Any]) -> None:
        async with self._transaction("storing an idempotency key") as conn:
            cursor = await conn.execute(
                "INSERT INTO idempotency (key, response, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (key, dumps(response), time.time()),
            )
            if not cursor.rowcount:
                raise Conflict(f"idempotency key {key!r} is already in use")
