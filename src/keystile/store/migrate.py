"""Ordered schema migrations, applied at start-up.

Files in ``migrations/`` are named ``NNNN_what.sql`` and applied in number order,
each inside the same transaction as the bump of ``schema_version``. The version
table is created first, so a fresh database never meets "no such table".

One ordered list for both engines: ``migrations/NNNN_what.sql`` is SQLite's, and
``migrations/postgresql/NNNN_what.sql`` the same step for PostgreSQL (same
number, same name; a test holds them in step). PostgreSQL's are applied by
:mod:`keystile.store.postgres`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

from keystile.core.errors import StoreError

_NAME_RE = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


ENGINES = {"sqlite": "migrations", "postgresql": "migrations/postgresql"}


def migrations(engine: str = "sqlite") -> list[Migration]:
    """Every shipped migration of ``engine``, in order."""
    found = []
    folder = resources.files("keystile.store").joinpath(ENGINES[engine])
    for entry in folder.iterdir():
        match = _NAME_RE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    expected = list(range(1, len(found) + 1))
    if [m.version for m in found] != expected:
        raise RuntimeError(f"migration numbers must run 1..N without gaps: {found}")
    return found


def statements(sql: str) -> list[str]:
    """Split a script into statements, keeping trigger bodies whole."""
    result, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            result.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        result.append(buffer.strip())
    return result


def current_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Bring the database up to ``target`` (default: the newest). Returns the version reached.

    ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
    pending = migrations()
    target = len(pending) if target is None else target
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = current_version(conn)
        if version > len(pending):
            raise StoreError(
                f"database schema version {version} is newer than this keystile "
                f"({len(pending)}): upgrade keystile"
            )
        for migration in pending[version:target]:
            for statement in statements(migration.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (migration.version,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return max(version, target)
