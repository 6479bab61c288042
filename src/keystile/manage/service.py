"""Key management: the one place the CLI and the admin API change keys through.

Every function validates its input (raising InvalidInput naming the field),
works on the store, and returns records; a new key's plain text is returned
once, inside :class:`Issued`, and never stored.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from keystile.core import keys
from keystile.core.errors import Conflict
from keystile.core.keys import Hasher
from keystile.manage.fields import (
    check_allowed_ips,
    check_credential,
    check_expiry,
    check_grace,
    check_limits,
    check_metadata,
    check_name,
    check_owner,
    check_scopes,
)
from keystile.store import Audit, KeyRecord, Store
from keystile.store.records import ACTIVE

# Judges a key as it would be stored against who is asking; raises to refuse. Called
# with (proposed, None) for a new key and (proposed, current) for a change to one.
Guard = Callable[[KeyRecord, KeyRecord | None], None]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class Issued:
    """A stored record and its key in plain text: shown once, then forgotten."""

    record: KeyRecord
    key: str


@dataclass(frozen=True, slots=True)
class Rotation:
    old: KeyRecord
    new: Issued


def new_key_id() -> str:
    """An opaque, stable, non-secret id."""
    return "key_" + "".join(secrets.choice(keys.BASE62) for _ in range(16))


class KeyService:
    """Create, change and retire keys."""

    def __init__(
        self,
        store: Store,
        hasher: Hasher,
        prefix: str = "ks",
        clock: Callable[[], float] = time.time,
        *,
        credentials: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        # the configured upstream credentials' names: what a key or team may be bound to
        self.credentials = credentials
        self.hasher = hasher
        self.prefix = prefix
        self.clock = clock
        # called with the hashes of changed keys, so that a cache in this process
        # drops them at once instead of at the next change-log sync
        self.on_change: list[Callable[[Iterable[str]], None]] = []

    def _changed(self, *records: KeyRecord) -> None:
        for listener in self.on_change:
            listener([record.key_hash for record in records])

    def _issue(self, now: float, **fields: Any) -> Issued:
        key = keys.generate(self.prefix)
        record = KeyRecord(
            id=new_key_id(),
            key_hash=self.hasher.digest(key),
            hash_scheme=self.hasher.scheme,
            display_prefix=keys.display_prefix(key),
            created_at=now,
            updated_at=now,
            **fields,
        )
        return Issued(record, key)

    async def create(
        self,
        name: str,
        *,
        scopes: Iterable[str] = (),
        owner: str | None = None,
        user_id: str | None = None,
        expires_at: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        allowed_ips: Iterable[str] | None = None,
        limits: Mapping[str, Any] | None = None,
        actor: str = "cli",
        guard: Guard | None = None,
        credential: str | None = None,
        at_most: tuple[str, int] | None = None,
    ) -> Issued:
        """A new key, shown once. ``at_most`` = (metadata source, N): refused with
        :class:`~keystile.errors.AtCapacity` when the user holds N active keys of that
        source, counted in the insert's own transaction."""
        now = self.clock()
        if user_id is not None:
            owner = owner or (await self.store.get_user(user_id)).external_id
        issued = self._issue(
            now,
            name=check_name(name),
            scopes=check_scopes(scopes),
            owner=check_owner(owner),
            user_id=user_id,
            expires_at=check_expiry(expires_at, now),
            metadata=check_metadata(metadata or {}),
            allowed_ips=check_allowed_ips(allowed_ips),
            limits=check_limits(limits or {}),
            credential=check_credential(credential, self.credentials),
        )
        if guard is not None:
            guard(issued.record, None)
        capacity = None
        if at_most is not None and user_id is not None:
            capacity = (user_id, at_most[0], at_most[1])
        await self.store.insert_keys([issued.record], Audit(actor, "key.create"),
                                     at_most=capacity)  # fmt: skip
        self._changed(issued.record)
        return issued

    async def list(
        self, *, include_inactive: bool = False, owner: str | None = None
    ) -> list[KeyRecord]:
        return await self.store.list_keys(
            include_inactive=include_inactive, owner=owner, now=self.clock()
        )

    async def get(self, key_id: str) -> KeyRecord:
        return await self.store.get_key(key_id)

    async def update(
        self,
        key_id: str,
        *,
        name: str | None = None,
        scopes: Iterable[str] | None = None,
        owner: str | None = UNSET,
        expires_at: float | None = UNSET,
        metadata: Mapping[str, Any] | None = None,
        enabled: bool | None = None,
        allowed_ips: Iterable[str] | None = UNSET,
        limits: Mapping[str, Any] | None = None,
        actor: str = "cli",
        guard: Guard | None = None,
        credential: str | None = UNSET,
    ) -> KeyRecord:
        """Change the given fields; UNSET/None leave a field alone (None clears expiry/owner;
        allowed_ips None means any address)."""
        now = self.clock()
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = check_name(name)
        if scopes is not None:
            changes["scopes"] = check_scopes(scopes)
        if owner is not UNSET:
            changes["owner"] = check_owner(owner)
        if expires_at is not UNSET:
            changes["expires_at"] = check_expiry(expires_at, now)
        if metadata is not None:
            changes["metadata"] = check_metadata(metadata)
        if enabled is not None:
            changes["enabled"] = enabled
        if allowed_ips is not UNSET:
            changes["allowed_ips"] = check_allowed_ips(allowed_ips)
        if limits is not None:
            changes["limits"] = check_limits(limits)
        if credential is not UNSET:
            changes["credential"] = check_credential(credential, self.credentials)
        current = await self.store.get_key(key_id)
        if current.deleted_at is not None:
            raise Conflict(f"key {key_id} is deleted and cannot be changed")
        if not changes:
            return current
        if guard is not None:
            guard(replace(current, **changes), current)
        changes["updated_at"] = now
        updated = await self.store.update_key(key_id, changes, Audit(actor, "key.update"))
        self._changed(updated)
        return updated

    async def revoke(self, key_id: str, actor: str = "cli") -> KeyRecord:
        """Disable a key for good; the record stays for audit. Idempotent."""
        return await self._retire(key_id, "revoked_at", Audit(actor, "key.revoke"))

    async def expire(self, key_id: str, actor: str = "cli") -> KeyRecord:
        """Expire a key now; the record stays for audit."""
        current = await self.store.get_key(key_id)
        now = self.clock()
        if current.state(now) != ACTIVE:
            return current
        changes = {"expires_at": now, "updated_at": now}
        updated = await self.store.update_key(key_id, changes, Audit(actor, "key.expire"))
        self._changed(updated)
        return updated

    async def delete(self, key_id: str, actor: str = "cli") -> KeyRecord:
        """Soft-delete: the key stops working and leaves listings; history stays. Idempotent."""
        return await self._retire(key_id, "deleted_at", Audit(actor, "key.delete"))

    async def _retire(self, key_id: str, stamp: str, audit: Audit) -> KeyRecord:
        current = await self.store.get_key(key_id)
        if getattr(current, stamp) is not None:
            return current
        now = self.clock()
        changes = {"enabled": False, stamp: now, "updated_at": now}
        updated = await self.store.update_key(key_id, changes, audit)
        self._changed(updated)
        return updated

    async def rotate(
        self, key_id: str, grace: float, actor: str = "cli", guard: Guard | None = None
    ) -> Rotation:
        """A new key with the same settings and groups; the old one works for ``grace``
        more seconds."""
        check_grace(grace)
        now = self.clock()
        old = await self.store.get_key(key_id)
        state = old.state(now)
        if state != ACTIVE:
            raise Conflict(f"key {key_id} is {state} and cannot be rotated")
        if old.replaced_by is not None:
            raise Conflict(f"key {key_id} was already replaced by {old.replaced_by}")
        issued = self._issue(
            now,
            name=old.name,
            owner=old.owner,
            scopes=old.scopes,
            metadata=old.metadata,
            expires_at=old.expires_at,
            origin="rotated",
            rotated_from=old.id,
            user_id=old.user_id,
            allowed_ips=old.allowed_ips,
            limits=old.limits,
            credential=old.credential,
        )
        if guard is not None:  # the new key is in the old one's groups and team too
            guard(replace(issued.record, groups=old.groups, team=old.team), None)
        old_end = now + grace
        if old.expires_at is not None:
            old_end = min(old_end, old.expires_at)
        old_changes = {"expires_at": old_end, "replaced_by": issued.record.id, "updated_at": now}
        old, new = await self.store.replace_key(
            key_id, old_changes, issued.record, Audit(actor, "key.rotate")
        )
        self._changed(old, new)
        return Rotation(old, Issued(new, issued.key))
