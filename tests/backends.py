"""The store's backends for tests: SQLite files, and schemas in a real PostgreSQL.

A module that sets ``BACKENDS = BOTH`` runs each test that uses the ``store``
(or ``db_location``) fixture once per backend. PostgreSQL is the server at
``KEYSTILE_TEST_POSTGRES_URL`` (default ``postgresql://127.0.0.1:5432/test``):
each test gets a schema of its own, dropped afterwards. No server: the test
skips, or fails under ``KEYSTILE_E2E_REQUIRED=1`` (CI).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg
import pytest

from keystile.store import Store
from keystile.store.postgres import PostgresStore

BOTH = ("sqlite", "postgresql")
POSTGRES = os.environ.get("KEYSTILE_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")


def unavailable(message: str) -> None:
    """Skip for want of a service; fail instead when KEYSTILE_E2E_REQUIRED=1 (CI)."""
    if os.environ.get("KEYSTILE_E2E_REQUIRED") == "1":
        pytest.fail(message + " and KEYSTILE_E2E_REQUIRED=1")
    pytest.skip(message)


def in_schema(server: str, schema: str) -> str:
    """``server``'s URL with ``schema`` first on the search path (asyncpg passes
    unknown query parameters on as server settings)."""
    return f"{server}{'&' if '?' in server else '?'}search_path={schema}"


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(POSTGRES, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"no PostgreSQL at {POSTGRES} ({exc}); set KEYSTILE_TEST_POSTGRES_URL")
        raise AssertionError("unreachable") from None


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A URL of a fresh, empty schema of its own, dropped with everything in it."""
    schema = f"ks_{uuid.uuid4().hex[:12]}"
    conn = await _admin()
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    try:
        yield in_schema(POSTGRES, schema)
    finally:
        conn = await _admin()
        try:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await conn.close()


@contextmanager
def postgres_schema_sync() -> Iterator[str]:
    """:func:`postgres_schema` for tests without an event loop (end-to-end ones)."""
    schema = postgres_schema()
    url = asyncio.run(schema.__aenter__())
    try:
        yield url
    finally:
        asyncio.run(schema.__aexit__(None, None, None))


async def dump(store: Store) -> str:
    """Every row of every table of ``store``, as text (to look for what must not be there)."""
    if isinstance(store, PostgresStore):
        sql = ("SELECT table_name FROM information_schema.tables"
               " WHERE table_schema = current_schema()")  # fmt: skip
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    tables = [row[0] for row in await store._fetch("listing tables", sql)]
    lines = []
    for table in sorted(tables):
        for row in await store._fetch("dumping", f"SELECT * FROM {table}"):
            lines.append(f"{table}: {tuple(row)!r}")
    return "\n".join(lines)
