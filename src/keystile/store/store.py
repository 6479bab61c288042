"""The store every other module uses, whichever engine holds it.

``Store.open(location)``: an SQLite file path (or ``sqlite:///path``), or a
``postgresql://`` URL. Both backends run the same SQL modules; see
:mod:`keystile.store.sql` for what each supplies.
"""

from __future__ import annotations

from pathlib import Path

from keystile.store.accounts import AccountStore
from keystile.store.keys import KeyStore
from keystile.store.oidc import OIDCStore
from keystile.store.sessions import SessionStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


class Store(KeyStore, AccountStore, SessionStore, OIDCStore):
    """Keys, accounts, sessions, OpenID Connect sign-ins under way and the audit log."""

    @classmethod
    async def open(cls, location: Path | str) -> Store:
        """Open (creating and migrating if needed) the store at ``location``."""
        if is_postgres(location):
            from keystile.store.postgres import PostgresStore

            return await PostgresStore.connect(str(location))
        from keystile.store.sqlite import SQLiteStore

        return await SQLiteStore.connect(location)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
