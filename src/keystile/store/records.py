"""Records of the store beside keys: teams, users, groups, audit entries.

The key record itself lives in :mod:`keystile.model` (the decision core reads
it); it is re-exported here for the store's modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keystile.core.model import (
    ACTIVE,
    COLUMNS,
    DELETED,
    DISABLED,
    EXPIRED,
    REVOKED,
    STATES,
    KeyRecord,
    TeamPolicy,
)

__all__ = ["ACTIVE", "COLUMNS", "DELETED", "DISABLED", "EXPIRED", "REVOKED", "ROLES",
           "STATES", "AuditEntry", "Group", "KeyRecord", "Session", "Team", "TeamPolicy",
           "User"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    created_at: float
    updated_at: float
    limits: dict[str, Any] = field(default_factory=dict)
    allowed_ips: tuple[str, ...] | None = None
    credential: str | None = None  # the upstream credential its users' keys use, by name

    def public(self) -> dict[str, Any]:
        ips = None if self.allowed_ips is None else list(self.allowed_ips)
        return {"id": self.id, "name": self.name, "limits": self.limits, "allowed_ips": ips,
                "credential": self.credential,
                "created_at": self.created_at, "updated_at": self.updated_at}  # fmt: skip


ROLES = ("admin", "member")


@dataclass(frozen=True, slots=True)
class User:
    id: str
    external_id: str  # the name a person signs in with (often an email address)
    created_at: float
    updated_at: float
    team_id: str | None = None
    role: str = "member"
    email: str | None = None
    password_hash: str | None = field(default=None, repr=False)  # argon2id; never shown
    disabled_at: float | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "external_id": self.external_id, "team_id": self.team_id,
                "role": self.role, "email": self.email,
                "has_password": self.password_hash is not None,
                "disabled": self.disabled_at is not None, "disabled_at": self.disabled_at,
                "created_at": self.created_at, "updated_at": self.updated_at}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Session:
    """A browser session as listings show it (the token's hash is never shown)."""

    id: str
    user_id: str
    created_at: float
    last_seen_at: float
    expires_at: float  # the absolute end
    revoked_at: float | None = None
    client_ip: str | None = None
    user_agent: str | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "user_id": self.user_id, "created_at": self.created_at,
                "last_seen_at": self.last_seen_at, "expires_at": self.expires_at,
                "revoked_at": self.revoked_at, "client_ip": self.client_ip,
                "user_agent": self.user_agent}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    name: str
    created_at: float
    updated_at: float
    scopes: tuple[str, ...] = ()

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "scopes": list(self.scopes),
                "created_at": self.created_at, "updated_at": self.updated_at}  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def public(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "actor": self.actor, "action": self.action,
                "target_type": self.target_type, "target_id": self.target_id,
                "before": self.before, "after": self.after}  # fmt: skip
