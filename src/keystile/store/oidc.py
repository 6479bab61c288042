"""OpenID Connect sign-ins under way, and finding a user by email.

A pending sign-in is stored under the hash of its state and taken out by the
callback in one statement (``DELETE ... RETURNING``): two callbacks with the
same state cannot both find it.
"""

from __future__ import annotations

from typing import NamedTuple

from keystile.core.emails import key_or_none
from keystile.store.accounts import _USER, _user
from keystile.store.records import User
from keystile.store.sql import SQLBase


class Pending(NamedTuple):
    """What the callback needs of the sign-in it finishes."""

    browser_hash: str
    nonce: str
    verifier: str
    return_to: str
    created_at: float


class OIDCStore(SQLBase):
    async def insert_pending(self, state_hash: str, pending: Pending, older_than: float) -> None:
        """Store a sign-in under way; sign-ins begun before ``older_than`` are dropped."""
        async with self._transaction("starting an OpenID Connect sign-in") as conn:
            await conn.execute("DELETE FROM oidc_pending WHERE created_at < ?", (older_than,))
            await conn.execute(
                "INSERT INTO oidc_pending (state_hash, browser_hash, nonce, verifier, return_to,"
                " created_at) VALUES (?,?,?,?,?,?)", (state_hash, *pending),
            )  # fmt: skip

    async def take_pending(self, state_hash: str) -> Pending | None:
        """The sign-in stored under ``state_hash``, removed (None: unknown or taken already)."""
        async with self._transaction("finishing an OpenID Connect sign-in") as conn:
            row = await self._one(
                conn, "DELETE FROM oidc_pending WHERE state_hash = ? RETURNING browser_hash,"
                " nonce, verifier, return_to, created_at", (state_hash,),
            )  # fmt: skip
        return None if row is None else Pending(*row)

    async def find_user_by_email(self, key: str) -> list[User]:
        """Users whose email, or sign-in name, is the address ``key`` (an
        :func:`~keystile.emails.email_key`), oldest first.

        SQL's ``lower()`` only narrows the search (through the index on it): PostgreSQL's
        folds U+212A KELVIN SIGN to ``k`` as Python's does, so each row found is compared
        again by keystile's own rule (ASCII lower-casing of a valid address)."""
        rows = await self._fetch(
            "finding a user by email",
            f"{_USER} WHERE lower(email) = ? OR lower(external_id) = ? ORDER BY created_at",
            (key, key),
        )
        users = [_user(row) for row in rows]
        return [u for u in users if key in (key_or_none(u.email), key_or_none(u.external_id))]
