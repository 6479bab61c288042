"""Keys from the environment (KEYSTILE_ADMIN_KEY, KEYSTILE_STATIC_KEYS) for CI and back-compat.

They are consulted after the database. Each presented key is hashed once and
compared with every static digest in constant time, with no early exit.
"""

from __future__ import annotations

import hashlib
import hmac

from keystile.core.model import ADMIN_SCOPE, ALL_SCOPES, KeyRecord

__all__ = ["ADMIN_SCOPE", "ALL_SCOPES", "StaticKeys"]


def _record(key_id: str, name: str, scopes: tuple[str, ...]) -> KeyRecord:
    return KeyRecord(
        id=key_id, key_hash="", hash_scheme="static", display_prefix=key_id, name=name,
        created_at=0.0, updated_at=0.0, scopes=scopes, origin="static",
    )  # fmt: skip


class StaticKeys:
    """The static keys of one process."""

    __slots__ = ("_entries",)

    def __init__(self, admin_key: str | None = None, client_keys: tuple[str, ...] = ()) -> None:
        entries = []
        if admin_key:
            entries.append(
                (admin_key, _record("static-admin", "KEYSTILE_ADMIN_KEY", (ADMIN_SCOPE,)))
            )
        for number, key in enumerate(client_keys, start=1):
            record = _record(f"static-{number}", f"KEYSTILE_STATIC_KEYS[{number}]", (ALL_SCOPES,))
            entries.append((key, record))
        self._entries = tuple((_digest(key), record) for key, record in entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def match(self, token: str) -> KeyRecord | None:
        """The static key record ``token`` is, or None."""
        if not self._entries:
            return None
        digest = _digest(token)
        found = None
        for candidate, record in self._entries:
            if hmac.compare_digest(candidate, digest):
                found = record
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
