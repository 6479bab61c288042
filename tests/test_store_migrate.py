import sqlite3
from pathlib import Path

import pytest

from keystile.errors import StoreError
from keystile.store import Store
from keystile.store.migrate import migrations, statements
from keystile.store.sqlite import migrate_file

LATEST = len(migrations())


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)


def test_fresh_database_migrates_to_latest(db_path: Path) -> None:
    assert migrate_file(db_path) == LATEST
    assert {"schema_version", "keys", "key_events"} <= tables(db_path)
    assert version(db_path) == LATEST


def test_migrating_twice_changes_nothing(db_path: Path) -> None:
    migrate_file(db_path)
    assert migrate_file(db_path) == LATEST
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == LATEST


@pytest.mark.parametrize("start", range(1, LATEST))
async def test_every_older_version_migrates_and_keeps_its_keys(db_path: Path, start: int) -> None:
    migrate_file(db_path, target=start)
    assert version(db_path) == start
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO keys (id, key_hash, hash_scheme, display_prefix, name, created_at,"
            " updated_at) VALUES ('key_old', 'ab' || hex(zeroblob(31)), 'sha256', 'ks_old', 'old',"
            " 1, 1)"
        )
    async with await Store.open(db_path) as store:
        record = await store.get_key("key_old")
    assert record.name == "old"
    assert version(db_path) == LATEST


def test_a_newer_schema_is_refused_with_a_clear_error(db_path: Path) -> None:
    migrate_file(db_path)
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (LATEST + 5,))
    with pytest.raises(StoreError, match="newer than this keystile"):
        migrate_file(db_path)


def test_statements_keep_trigger_bodies_whole() -> None:
    sql = "-- c\nCREATE TABLE t (a);\nCREATE TRIGGER x AFTER INSERT ON t\nBEGIN\n SELECT 1;\nEND;\n"
    parts = statements(sql)
    assert len(parts) == 2
    assert parts[1].startswith("CREATE TRIGGER") and parts[1].endswith("END;")


def test_migration_files_are_numbered_without_gaps() -> None:
    assert [m.version for m in migrations()] == list(range(1, LATEST + 1))
