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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


async def _create(schema: str) -> None:
    conn = await _admin()
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()


async def _drop(schema: str) -> None:
    conn = await _admin()
    try:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A URL of a fresh, empty schema of its own, dropped with everything in it."""
    schema = f"ks_{uuid.uuid4().hex[:12]}"
    await _create(schema)
    try:
        yield in_schema(POSTGRES, schema)
    finally:
        await _drop(schema)


@contextmanager
def postgres_schema_sync() -> Iterator[str]:
    """:func:`postgres_schema` for tests without an event loop (end-to-end ones)."""
    schema = f"ks_{uuid.uuid4().hex[:12]}"
    _run_apart(_create, schema)
    try:
        yield in_schema(POSTGRES, schema)
    finally:
        _run_apart(_drop, schema)


def _run_apart(step: Callable[[str], Awaitable[None]], schema: str) -> None:
    """``step(schema)`` in an event loop of its own, on a thread of its own: module
    fixtures may end while some test's loop is running on this thread."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(step(schema))).result()


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
