"""The SQLite store: one file (see base.py for the plumbing)."""

from __future__ import annotations

from pathlib import Path

from keystile.store.base import SQLiteBase, migrate_file, prepare_file, translated
from keystile.store.keys import UPDATABLE, KeyFilter
from keystile.store.store import Store

__all__ = ["UPDATABLE", "KeyFilter", "SQLiteStore", "migrate_file", "prepare_file", "translated"]


class SQLiteStore(Store, SQLiteBase):
    """The store in one SQLite file."""

    @classmethod
    async def connect(cls, path: Path | str) -> SQLiteStore:
        return cls(*await cls._connect(path))
