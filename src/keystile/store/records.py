"""The key record as the rest of keystile sees it."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

import orjson

ACTIVE = "active"
EXPIRED = "expired"
DISABLED = "disabled"
REVOKED = "revoked"
DELETED = "deleted"
STATES = (ACTIVE, EXPIRED, DISABLED, REVOKED, DELETED)

COLUMNS = (
    "id", "key_hash", "hash_scheme", "display_prefix", "name", "owner", "scopes", "metadata",
    "created_at", "updated_at", "last_used_at", "expires_at", "enabled", "revoked_at",
    "deleted_at", "origin", "rotated_from", "replaced_by",
)  # fmt: skip


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

    def to_row(self) -> tuple[Any, ...]:
        """Column values in COLUMNS order, JSON columns encoded."""
        values = []
        for name in COLUMNS:
            value = getattr(self, name)
            if name == "scopes":
                value = orjson.dumps(list(value)).decode()
            elif name == "metadata":
                value = orjson.dumps(value).decode()
            elif name == "enabled":
                value = int(value)
            values.append(value)
        return tuple(values)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> KeyRecord:
        data = dict(zip(COLUMNS, row, strict=True))
        data["scopes"] = tuple(orjson.loads(data["scopes"]))
        data["metadata"] = orjson.loads(data["metadata"])
        data["enabled"] = bool(data["enabled"])
        return cls(**data)

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
        }
