import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from keystile.core.errors import InvalidInput
from keystile.core.keys import Hasher, KeyFormat
from keystile.manage.importer import import_keys
from keystile.serve.lookup import KeyLookup
from keystile.serve.static_keys import StaticKeys
from keystile.store import Store
from tests.backends import BOTH

from .conftest import Clock

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL

LEGACY = "sk-legacy-5f1c2a9e0b7d4c3f8a6e"


def legacy_db(path: Path, rows: list[tuple]) -> Path:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "CREATE TABLE api_keys (key_hash TEXT, key_prefix TEXT, name TEXT, created_at TEXT,"
            " last_used_at TEXT, expires_at TEXT, enabled INTEGER, scopes TEXT, metadata TEXT)"
        )
        conn.executemany("INSERT INTO api_keys VALUES (?,?,?,?,?,?,?,?,?)", rows)
    return path


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def test_imported_keys_keep_working(tmp_path: Path, store: Store, clock: Clock) -> None:
    source = legacy_db(
        tmp_path / "old.db",
        [
            (sha(LEGACY), "sk-leg", "gateway", "2025-01-02T03:04:05Z", None, None, 1,
             '["chat", "memory"]', '{"team": "ml"}'),
            (sha("sk-other-aaaaaaaaaaaaaaaa"), "sk-oth", "other", "1735689600", None,
             "2099-01-01", 0, "chat,agent", None),
        ],
    )  # fmt: skip
    result = await import_keys(store, source, "api_keys", clock)
    assert (result.read, result.imported, result.skipped) == (2, 2, 0)
    lookup = KeyLookup(store, Hasher(), KeyFormat("ks"), StaticKeys())
    await lookup.refresh()
    record = await lookup.find(LEGACY)
    assert record is not None
    assert record.name == "gateway" and record.scopes == ("chat", "memory")
    assert record.metadata == {"team": "ml"} and record.origin == "imported"
    assert record.created_at == 1735787045.0
    other = await lookup.find("sk-other-aaaaaaaaaaaaaaaa")
    assert other is not None and not other.enabled and other.scopes == ("agent", "chat")
    # re-running skips what is already there
    again = await import_keys(store, source, "api_keys", clock)
    assert (again.imported, again.skipped) == (0, 2)


async def test_bad_source_names_the_problem(tmp_path: Path, store: Store, clock: Clock) -> None:
    with pytest.raises(InvalidInput, match="not a file"):
        await import_keys(store, tmp_path / "missing.db", "api_keys", clock)
    source = legacy_db(
        tmp_path / "old.db", [("nothex", None, "x", None, None, None, 1, None, None)]
    )
    with pytest.raises(InvalidInput, match="row 1 key_hash"):
        await import_keys(store, source, "api_keys", clock)
    with pytest.raises(InvalidInput, match="'nope' does not exist"):
        await import_keys(store, source, "nope", clock)
    with pytest.raises(InvalidInput, match="plain table name"):
        await import_keys(store, source, "x; DROP TABLE keys", clock)


@pytest.mark.parametrize("enabled", ["\u00b2", "\u0661", "yes", "1.5.0"])
async def test_an_enabled_column_that_is_not_a_number_names_the_row(
    tmp_path: Path, store: Store, clock: Clock, enabled: str
) -> None:
    source = legacy_db(
        tmp_path / "old.db", [(sha(LEGACY), None, "x", None, None, None, enabled, None, None)]
    )
    with pytest.raises(InvalidInput, match="row 1 enabled"):
        await import_keys(store, source, "api_keys", clock)
