"""The core model: a stored key as the decision core sees it. Pure data, no I/O.

Nothing here knows HTTP, a web framework or a database driver: the store turns
rows into these records, the decision core reads them, and whatever the
serving layer derives from a record (rendered replies) lives beside it in the
cache, never on it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import orjson

ACTIVE = "active"
EXPIRED = "expired"
DISABLED = "disabled"
REVOKED = "revoked"
DELETED = "deleted"
STATES = (ACTIVE, EXPIRED, DISABLED, REVOKED, DELETED)

# The state changes a key may go through, and who may make each: an admin (the
# admin key, a key or person with scope admin) or the key's owner (a keys:self key,
# a signed-in member on their own key). Revoked and deleted are final for everyone.
# Anything else is refused: a member cannot bring back a key an admin expired or
# disabled by editing it (a new expiry, "enabled"). docs/policy.md shows this table.
ADMIN_ROLE, OWNER_ROLE = "admin", "owner"
TRANSITIONS: dict[tuple[str, str], frozenset[str]] = {
    (ACTIVE, DISABLED): frozenset({ADMIN_ROLE, OWNER_ROLE}),
    (ACTIVE, EXPIRED): frozenset({ADMIN_ROLE, OWNER_ROLE}),
    (ACTIVE, REVOKED): frozenset({ADMIN_ROLE, OWNER_ROLE}),
    (ACTIVE, DELETED): frozenset({ADMIN_ROLE, OWNER_ROLE}),
    (DISABLED, ACTIVE): frozenset({ADMIN_ROLE}),
    (DISABLED, EXPIRED): frozenset({ADMIN_ROLE, OWNER_ROLE}),
    (DISABLED, REVOKED): frozenset({ADMIN_ROLE, OWNER_ROLE}),
    (DISABLED, DELETED): frozenset({ADMIN_ROLE, OWNER_ROLE}),
    (EXPIRED, ACTIVE): frozenset({ADMIN_ROLE}),
    (EXPIRED, DISABLED): frozenset({ADMIN_ROLE, OWNER_ROLE}),
    (EXPIRED, REVOKED): frozenset({ADMIN_ROLE, OWNER_ROLE}),
    (EXPIRED, DELETED): frozenset({ADMIN_ROLE, OWNER_ROLE}),
    (REVOKED, DELETED): frozenset({ADMIN_ROLE, OWNER_ROLE}),
}


def may_change_state(role: str, before: str, after: str) -> bool:
    """Whether ``role`` may take a key from state ``before`` to ``after`` (staying put
    is always fine)."""
    return before == after or role in TRANSITIONS.get((before, after), frozenset())


COLUMNS = (
    "id", "key_hash", "hash_scheme", "display_prefix", "name", "owner", "scopes", "metadata",
    "created_at", "updated_at", "last_used_at", "expires_at", "enabled", "revoked_at",
    "deleted_at", "origin", "rotated_from", "replaced_by", "user_id", "allowed_ips", "limits",
    "credential",
)  # fmt: skip
_JSON_COLUMNS = ("scopes", "metadata", "limits")
ADMIN_SCOPE = "admin"
KEY = "key"
SESSION = "session"
ALL_SCOPES = "*"  # every scope but admin
_EMPTY: dict[str, Any] = {}  # shared by records without metadata or limits: never mutated


@lru_cache(maxsize=1024)
def _scopes(text: str) -> tuple[str, ...]:
    """One tuple per distinct scope list: keys share a few (a cached key is ~1 KB)."""
    return tuple(sys.intern(scope) for scope in orjson.loads(text))


def _json_object(text: str) -> dict[str, Any]:
    return _EMPTY if text == "{}" else orjson.loads(text)


@dataclass(frozen=True, slots=True)
class TeamPolicy:
    """What a key's team adds to its policy."""

    id: str
    limits: dict[str, Any] = field(default_factory=dict)
    allowed_ips: tuple[str, ...] | None = None  # None: any address
    credential: str | None = None  # the upstream credential its keys use, by name


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One stored key. Holds the hash, never the key."""

    id: str
    key_hash: str
    hash_scheme: str
    display_prefix: str
    name: str
    created_at: float
    updated_at: float
    owner: str | None = None
    scopes: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    last_used_at: float | None = None
    expires_at: float | None = None
    enabled: bool = True
    revoked_at: float | None = None
    deleted_at: float | None = None
    origin: str = "created"
    rotated_from: str | None = None
    replaced_by: str | None = None
    user_id: str | None = None
    allowed_ips: tuple[str, ...] | None = None  # None: any address
    limits: dict[str, Any] = field(default_factory=dict)
    credential: str | None = None  # the upstream credential it uses, by name (else its team's)
    # from the key's groups (not columns of the key)
    groups: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (id, name, scopes)
    team: TeamPolicy | None = None  # through the key's user
    # "key", or "session": a signed-in person (id: the session's, name: the user's,
    # owner: the email, scopes: the role's; see keystile.sessions)
    kind: str = "key"
    role: str | None = None
    granted: tuple[str, ...] = field(init=False, default=())  # own scopes and groups'
    limited: bool = field(init=False, default=False)  # any rate limit or quota, key or team
    has_quotas: bool = field(init=False, default=False)
    has_budgets: bool = field(init=False, default=False)  # a token budget, key or team

    def __post_init__(self) -> None:
        granted = set(self.scopes)
        for _, _, scopes in self.groups:
            granted.update(scopes)
        ordered = tuple(sorted(granted))
        object.__setattr__(self, "granted", self.scopes if ordered == self.scopes else ordered)
        limits = [*self.limits, *(self.team.limits if self.team else ())]
        object.__setattr__(self, "limited", bool(limits))
        object.__setattr__(self, "has_quotas", any(name.startswith("quota_") for name in limits))
        object.__setattr__(self, "has_budgets", any(name.startswith("tokens_") for name in limits))

    @property
    def bound_credential(self) -> str | None:
        """The name of the upstream credential routes send for this key: its own
        binding, else its team's; None: unbound (a route's default applies)."""
        if self.credential is not None:
            return self.credential
        return self.team.credential if self.team is not None else None

    def state(self, now: float) -> str:
        """The key's state at ``now``; only ``active`` keys authenticate."""
        if self.deleted_at is not None:
            return DELETED
        if self.revoked_at is not None:
            return REVOKED
        if not self.enabled:
            return DISABLED
        if self.expires_at is not None and now >= self.expires_at:
            return EXPIRED
        return ACTIVE

    def lean(self) -> KeyRecord:
        """A copy for the key cache: what the request path and the admin API's caller
        check read, without what only listings show (timestamps, metadata, lineage).
        At 100k cached keys every field left out is megabytes."""
        return replace(self, display_prefix="", created_at=0.0, updated_at=0.0,
                       metadata=_EMPTY, last_used_at=None, rotated_from=None,
                       replaced_by=None)  # fmt: skip

    def to_row(self) -> tuple[Any, ...]:
        """Column values in COLUMNS order, JSON columns encoded."""
        values = []
        for name in COLUMNS:
            value = getattr(self, name)
            if name in _JSON_COLUMNS or (name == "allowed_ips" and value is not None):
                value = orjson.dumps(list(value) if isinstance(value, tuple) else value).decode()
            elif name == "enabled":
                value = int(value)
            values.append(value)
        return tuple(values)

    @classmethod
    def from_row(
        cls,
        row: Sequence[Any],
        groups: tuple[tuple[str, str, tuple[str, ...]], ...] = (),
        team: TeamPolicy | None = None,
    ) -> KeyRecord:
        data = dict(zip(COLUMNS, row, strict=True))
        # many keys hold the same few words: one copy of each (a cached key is ~1 KB)
        data["hash_scheme"] = sys.intern(data["hash_scheme"])
        data["origin"] = sys.intern(data["origin"])
        data["scopes"] = _scopes(data["scopes"])
        data["metadata"] = _json_object(data["metadata"])
        data["limits"] = _json_object(data["limits"])
        if data["allowed_ips"] is not None:
            data["allowed_ips"] = tuple(orjson.loads(data["allowed_ips"]))
        data["enabled"] = bool(data["enabled"])
        return cls(**data, groups=groups, team=team)

    def public(self, now: float) -> dict[str, Any]:
        """What listings show: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "display_prefix": self.display_prefix,
            "owner": self.owner,
            "scopes": list(self.scopes),
            "metadata": self.metadata,
            "state": self.state(now),
            "enabled": self.enabled,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_used_at": self.last_used_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "deleted_at": self.deleted_at,
            "origin": self.origin,
            "hash_scheme": self.hash_scheme,
            "rotated_from": self.rotated_from,
            "replaced_by": self.replaced_by,
            "user_id": self.user_id,
            "allowed_ips": None if self.allowed_ips is None else list(self.allowed_ips),
            "limits": self.limits,
            "groups": [name for _, name, _ in self.groups],
            "team_id": self.team.id if self.team else None,
            "credential": self.credential,
            "granted_scopes": list(self.granted),
        }


@dataclass(frozen=True, slots=True)
class RateInfo:
    """The tightest limit that applied: what X-RateLimit-* report."""

    limit: int
    remaining: int
    reset: int  # seconds until the window rolls over
