import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest

from keystile.core.errors import StoreError
from keystile.store import Store
from keystile.store.migrate import migrations, statements
from keystile.store.postgres import migrate as pg_migrate
from keystile.store.sqlite import migrate_file
from tests.backends import postgres_schema

LATEST = len(migrations())


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn, conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn, conn:
        return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)


def test_fresh_database_migrates_to_latest(db_path: Path) -> None:
    assert migrate_file(db_path) == LATEST
    assert {"schema_version", "keys", "key_events"} <= tables(db_path)
    assert version(db_path) == LATEST


def test_migrating_twice_changes_nothing(db_path: Path) -> None:
    migrate_file(db_path)
    assert migrate_file(db_path) == LATEST
    with closing(sqlite3.connect(db_path)) as conn, conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == LATEST


@pytest.mark.parametrize("start", range(1, LATEST))
async def test_every_older_version_migrates_and_keeps_its_keys(db_path: Path, start: int) -> None:
    migrate_file(db_path, target=start)
    assert version(db_path) == start
    with closing(sqlite3.connect(db_path)) as conn, conn:
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
    with closing(sqlite3.connect(db_path)) as conn, conn:
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


def test_both_engines_have_the_same_steps() -> None:
    """One ordered list: each step exists for SQLite and for PostgreSQL, same name."""
    assert [m.name for m in migrations("postgresql")] == [m.name for m in migrations()]


# -- PostgreSQL ---------------------------------------------------------------------


async def pg_version(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
    finally:
        await conn.close()


async def test_postgres_fresh_schema_migrates_and_a_second_run_changes_nothing() -> None:
    async with postgres_schema() as url:
        conn = await asyncpg.connect(url)
        try:
            assert await pg_migrate(conn) == LATEST
            assert await pg_migrate(conn) == LATEST
            assert await conn.fetchval("SELECT count(*) FROM schema_version") == LATEST
        finally:
            await conn.close()
        async with await Store.open(url) as store:
            await store.ping()


@pytest.mark.parametrize("start", range(1, LATEST))
async def test_postgres_every_older_version_migrates_and_keeps_its_keys(start: int) -> None:
    async with postgres_schema() as url:
        conn = await asyncpg.connect(url)
        try:
            assert await pg_migrate(conn, target=start) == start
            await conn.execute(
                "INSERT INTO keys (id, key_hash, hash_scheme, display_prefix, name, created_at,"
                " updated_at) VALUES ('key_old', repeat('ab', 32), 'sha256', 'ks_old', 'old', 1, 1)"
            )
        finally:
            await conn.close()
        async with await Store.open(url) as store:
            record = await store.get_key("key_old")
            assert record.name == "old"
            await store.update_key("key_old", {"name": "renamed"})  # the newest triggers run
        assert await pg_version(url) == LATEST


async def test_postgres_newer_schema_is_refused_with_a_clear_error() -> None:
    async with postgres_schema() as url:
        conn = await asyncpg.connect(url)
        try:
            await pg_migrate(conn)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", LATEST + 5)
            with pytest.raises(StoreError, match="newer than this keystile"):
                await pg_migrate(conn)
        finally:
            await conn.close()


async def test_postgres_replicas_starting_together_migrate_once() -> None:
    async with postgres_schema() as url:
        stores = await asyncio.gather(*(Store.open(url) for _ in range(4)))
        for store in stores:
            await store.close()
        assert await pg_version(url) == LATEST


async def test_a_postgresql_schema_that_does_not_exist_is_named_with_what_to_do() -> None:
    """PostgreSQL's own words were 'no schema has been selected to create in'."""
    from tests.backends import POSTGRES, _admin, in_schema

    (await _admin()).terminate()  # skips (or fails in CI) without a server
    with pytest.raises(StoreError) as caught:
        await Store.open(in_schema(POSTGRES, "keystile_no_such_schema"))
    message = str(caught.value)
    assert "schema 'keystile_no_such_schema'" in message
    assert 'CREATE SCHEMA "keystile_no_such_schema"' in message
