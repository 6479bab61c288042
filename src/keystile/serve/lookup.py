"""From a presented key to its record: shape check, database, then static keys."""

from __future__ import annotations

from typing import Protocol

from keystile.core.keys import Hasher, KeyFormat, Shape
from keystile.serve.static_keys import StaticKeys
from keystile.store import KeyRecord, Store


class _Candidates(Protocol):
    def candidates(self, token: str) -> tuple[tuple[str, str], ...]: ...


class _Static(Protocol):
    def match(self, token: str) -> KeyRecord | None: ...


class Lookup(Protocol):
    """What :class:`~keystile.cache.CachedLookup` asks of a lookup (keys, sessions)."""

    @property
    def store(self) -> Store: ...
    @property
    def hasher(self) -> _Candidates: ...
    @property
    def static(self) -> _Static: ...
    def may_exist(self, token: str) -> bool: ...
    async def refresh(self) -> None: ...
    async def find_stored(self, candidates: tuple[tuple[str, str], ...]) -> KeyRecord | None: ...
    async def stored_hashes(self, after: str, limit: int) -> list[str]: ...


class KeyLookup:
    """Finds the record of a presented key. Never stores or logs the key itself.

    Order: a malformed key (wrong prefix, bad checksum, bad characters, too long)
    never reaches the store; a key in keystile's format is looked up by hash
    (HMAC-SHA256 first when a pepper is set, then SHA-256); a key in another
    format reaches the store only when imported keys exist; static keys last.
    """

    def __init__(
        self, store: Store, hasher: Hasher, key_format: KeyFormat, static: StaticKeys
    ) -> None:
        self.store = store
        self.hasher = hasher
        self.key_format = key_format
        self.static = static
        self.accept_foreign = False

    async def refresh(self) -> None:
        """Re-read facts about the store that decide which keys may be looked up."""
        self.accept_foreign = await self.store.has_imported_keys()

    def may_exist(self, token: str) -> bool:
        """Whether ``token`` is worth a store lookup at all."""
        shape = self.key_format.shape(token)
        return shape is Shape.OURS or (shape is Shape.FOREIGN and self.accept_foreign)

    async def find_stored(self, candidates: tuple[tuple[str, str], ...]) -> KeyRecord | None:
        """The stored record under one of the (scheme, digest) candidates."""
        for scheme, digest in candidates:
            record = await self.store.find_by_hash(digest)
            if record is not None and record.hash_scheme == scheme:
                return record
        return None

    async def stored_hashes(self, after: str, limit: int) -> list[str]:
        return await self.store.key_hashes(after, limit)

    async def find(self, token: str) -> KeyRecord | None:
        """Uncached lookup (the CLI and tests; the server uses CachedLookup)."""
        if self.may_exist(token):
            record = await self.find_stored(self.hasher.candidates(token))
            if record is not None:
                return record
        return self.static.match(token)
