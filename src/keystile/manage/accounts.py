"""Teams, users and groups: managed through here by the CLI and the admin API.

A key belongs to a user and through the user to a team; a group grants scopes
(and so routes) to every key in it. Every change is audited, and changes that
alter what keys may do reach this process's cache at once (other processes
through the store's change log).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from keystile.identity.passwords import hash_password
from keystile.manage.fields import (
    check_allowed_ips,
    check_credential,
    check_email,
    check_group_name,
    check_limits,
    check_role,
    check_scopes,
    check_text,
)
from keystile.manage.service import UNSET, KeyService, new_key_id
from keystile.store import Audit, Group, KeyFilter, Team, User


def new_id(kind: str) -> str:
    return kind + new_key_id()[3:]


class AccountService:
    def __init__(self, keys: KeyService) -> None:
        self.keys = keys
        self.store = keys.store
        # a user changed (role, team, groups, disabled, password): their sessions are
        # re-read; this process's session cache reads the change log at once
        self.on_user_change: list[Callable[[], Awaitable[object]]] = []

    # -- teams and users --------------------------------------------------------------

    async def create_team(
        self,
        name: str,
        limits: Mapping[str, Any] | None = None,
        actor: str = "cli",
        allowed_ips: Iterable[str] | None = None,
        credential: str | None = None,
    ) -> Team:
        now = self.keys.clock()
        team = Team(new_id("team"), check_text("name", name), now, now, check_limits(limits or {}),
                    check_allowed_ips(allowed_ips),
                    check_credential(credential, self.keys.credentials))  # fmt: skip
        return await self.store.insert_team(team, Audit(actor, "team.create"))

    async def update_team(
        self,
        team_id: str,
        name: str | None = None,
        limits: Mapping[str, Any] | None = None,
        actor: str = "cli",
        allowed_ips: Iterable[str] | None = UNSET,
        credential: str | None = UNSET,
    ) -> Team:
        changes: dict[str, Any] = {}
        if credential is not UNSET:
            changes["credential"] = check_credential(credential, self.keys.credentials)
        if allowed_ips is not UNSET:
            changes["allowed_ips"] = check_allowed_ips(allowed_ips)
        if name is not None:
            changes["name"] = check_text("name", name)
        if limits is not None:
            changes["limits"] = check_limits(limits)
        team = await self.store.update_team(team_id, changes, Audit(actor, "team.update"))
        await self._changed_keys(KeyFilter(include_inactive=True, team_id=team_id))
        return team

    async def create_user(
        self,
        external_id: str,
        team_id: str | None = None,
        actor: str = "cli",
        *,
        role: str = "member",
        email: str | None = None,
        password: str | None = None,
    ) -> User:
        now = self.keys.clock()
        hashed = None if password is None else await hash_password(password)
        user = User(new_id("user"), check_text("external_id", external_id), now, now, team_id,
                    check_role(role), check_email(email), hashed)  # fmt: skip
        return await self.store.insert_user(user, Audit(actor, "user.create"))

    async def find_user(self, name_or_id: str) -> User:
        """A user by id, or by the name they sign in with."""
        user = await self.store.find_user(name_or_id)
        return user if user is not None else await self.store.get_user(name_or_id)

    async def update_user(
        self,
        user_id: str,
        *,
        role: str | None = None,
        email: str | object | None = UNSET,
        team_id: str | object | None = UNSET,
        disabled: bool | None = None,
        actor: str = "cli",
    ) -> User:
        """Change a user; a disabled user's sessions and keys stop (every server, one poll)."""
        changes: dict[str, Any] = {}
        if role is not None:
            changes["role"] = check_role(role)
        if email is not UNSET:
            changes["email"] = check_email(email)  # type: ignore[arg-type]
        if team_id is not UNSET:
            changes["team_id"] = team_id
        if disabled is not None:
            user = await self.store.get_user(user_id)
            if disabled != (user.disabled_at is not None):
                changes["disabled_at"] = self.keys.clock() if disabled else None
        action = {True: "user.disable", False: "user.enable", None: "user.update"}[disabled]
        user = await self.store.update_user(user_id, changes, Audit(actor, action))
        await self._changed_keys(KeyFilter(include_inactive=True, user_id=user_id))
        await self._users_changed()
        return user

    async def _users_changed(self) -> None:
        for changed in self.on_user_change:
            await changed()

    async def set_password(self, user_id: str, password: str | None, actor: str = "cli") -> User:
        """Set (None: remove) a user's password. Audited without it."""
        hashed = None if password is None else await hash_password(password)
        user = await self.store.update_user(user_id, {"password_hash": hashed},
                                            Audit(actor, "user.set_password"))  # fmt: skip
        await self._users_changed()
        return user

    async def set_user_membership(
        self, group_id: str, user_id: str, member: bool, actor: str = "cli"
    ) -> bool:
        action = "group.add_user" if member else "group.remove_user"
        changed = await self.store.set_membership(user_id, group_id, member,
                                                  Audit(actor, action), kind="user")  # fmt: skip
        await self._users_changed()
        return changed

    # -- groups -------------------------------------------------------------------------

    async def create_group(
        self, name: str, scopes: Iterable[str] = (), actor: str = "cli"
    ) -> Group:
        now = self.keys.clock()
        group = Group(new_id("group"), check_group_name(name), now, now, check_scopes(scopes))
        return await self.store.insert_group(group, Audit(actor, "group.create"))

    async def update_group(
        self,
        group_id: str,
        name: str | None = None,
        scopes: Iterable[str] | None = None,
        actor: str = "cli",
    ) -> Group:
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = check_group_name(name)
        if scopes is not None:
            changes["scopes"] = check_scopes(scopes)
        group = await self.store.update_group(group_id, changes, Audit(actor, "group.update"))
        await self._changed_keys(KeyFilter(include_inactive=True, group_id=group_id))
        return group

    async def delete_group(self, group_id: str, actor: str = "cli") -> Group:
        members = await self.store.find_keys(
            KeyFilter(include_inactive=True, group_id=group_id), 0.0
        )
        group = await self.store.delete_group(group_id, Audit(actor, "group.delete"))
        self.keys._changed(*members)
        return group

    async def set_membership(
        self, group_id: str, key_id: str, member: bool, actor: str = "cli"
    ) -> bool:
        action = "group.add_key" if member else "group.remove_key"
        changed = await self.store.set_membership(key_id, group_id, member, Audit(actor, action))
        if changed:
            self.keys._changed(await self.store.get_key(key_id))
        return changed

    async def _changed_keys(self, query: KeyFilter) -> None:
        """Tell this process's cache about keys whose effective rights just changed."""
        self.keys._changed(*await self.store.find_keys(query, 0.0))
