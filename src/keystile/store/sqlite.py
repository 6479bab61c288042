"""The SQLite store: one file, all SQL in this package (see base.py for the plumbing)."""

from __future__ import annotations

from pathlib import Path

from keystile.store.accounts import AccountStore
from keystile.store.base import migrate_file, prepare_file, translated
from keystile.store.keys import UPDATABLE, KeyFilter, KeyStore
from keystile.store.oidc import OIDCStore
from keystile.store.sessions import SessionStore

__all__ = ["UPDATABLE", "KeyFilter", "Store", "migrate_file", "prepare_file", "translated"]


class Store(KeyStore, AccountStore, SessionStore, OIDCStore):
    """Keys, accounts, sessions, OpenID Connect sign-ins under way and the audit log in
    one SQLite file."""

    @classmethod
    async def open(cls, path: Path | str) -> Store:
        """Open (creating and migrating if needed) the store at ``path``."""
        return cls(*await cls._connect(path))

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
