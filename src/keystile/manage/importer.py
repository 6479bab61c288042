"""``keys import``: adopt keys from a hand-made SQLite table of SHA-256 hashes.

The source table needs ``key_hash`` (hex SHA-256 of the full key); these columns
are used when present: key_prefix, name, created_at, last_used_at, expires_at,
enabled, scopes (JSON list or comma list), metadata (JSON object), owner.
Times may be Unix seconds or ISO-8601 text. Keys already in the store (same hash)
are skipped, so an import can be re-run.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from keystile.core import keys, numbers
from keystile.core.durations import parse_instant
from keystile.core.errors import InvalidInput
from keystile.manage.fields import check_metadata, check_name, check_owner, check_scopes
from keystile.manage.service import new_key_id
from keystile.store import KeyRecord, Store

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
OPTIONAL = ("key_prefix", "name", "created_at", "last_used_at", "expires_at", "enabled",
            "scopes", "metadata", "owner")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ImportResult:
    read: int
    imported: int
    skipped: int


def _instant(value: Any, field: str, row: int) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,20}(\.[0-9]{1,20})?", value.strip()):
        value = float(value)
    if isinstance(value, int | float):
        return float(value) / (1000.0 if value > 1e11 else 1.0)  # milliseconds, if it looks so
    try:
        return parse_instant(str(value))
    except ValueError as exc:
        raise InvalidInput(f"row {row} {field}", str(exc)) from None


def _enabled(value: Any, row: int) -> bool:
    """An enabled column: missing is enabled; else a whole number (0 is off) or a boolean."""
    if value is None:
        return True
    if isinstance(value, bool | int | float):
        return bool(value)
    number = numbers.digits(str(value).strip())
    if number is None:
        raise InvalidInput(f"row {row} enabled", f"{str(value)[:40]!r} is not 0 or 1")
    return bool(number)


def _scopes(value: Any, row: int) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    text = str(value).strip()
    items = orjson.loads(text) if text.startswith("[") else text.split(",")
    try:
        return check_scopes(str(item).strip() for item in items if str(item).strip())
    except InvalidInput as exc:
        raise InvalidInput(f"row {row} scopes", str(exc)) from None


def _metadata(value: Any, row: int) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise InvalidInput(f"row {row} metadata", "is not a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"row {row} metadata", "is not a JSON object")
    return check_metadata(data)


def _owner(value: Any, row: int) -> str | None:
    try:
        return check_owner(str(value)) if value else None
    except InvalidInput as exc:
        raise InvalidInput(f"row {row} owner", str(exc)) from None


def read_source(path: Path, table: str, now: float) -> list[KeyRecord]:
    """Records for every row of ``table`` in the SQLite file at ``path`` (opened read-only)."""
    if not _IDENT_RE.fullmatch(table):
        raise InvalidInput("table", f"{table!r} is not a plain table name")
    if not path.is_file():
        raise InvalidInput("source", f"{str(path)!r} is not a file")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        try:
            columns = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
            if not columns:
                raise InvalidInput("table", f"{table!r} does not exist in {str(path)!r}")
            if "key_hash" not in columns:
                raise InvalidInput("table", f"{table!r} has no key_hash column")
            wanted = ["key_hash", *(c for c in OPTIONAL if c in columns)]
            rows = conn.execute(f'SELECT {", ".join(wanted)} FROM "{table}"').fetchall()  # noqa: S608
        except sqlite3.Error as exc:
            raise InvalidInput("source", f"{str(path)!r} cannot be read: {exc}") from None
    finally:
        conn.close()
    return [_record(dict(row), number, now) for number, row in enumerate(rows, start=1)]


def _record(row: dict[str, Any], number: int, now: float) -> KeyRecord:
    key_hash = str(row["key_hash"] or "")
    if not _HEX64_RE.fullmatch(key_hash):
        raise InvalidInput(f"row {number} key_hash", "is not a hex SHA-256 digest")
    created = _instant(row.get("created_at"), "created_at", number) or now
    return KeyRecord(
        id=new_key_id(),
        key_hash=key_hash.lower(),
        hash_scheme=keys.SCHEME_SHA256,
        display_prefix=str(row.get("key_prefix") or "")[:16] or "imported",
        name=check_name(str(row.get("name") or f"imported {number}")),
        owner=_owner(row.get("owner"), number),
        scopes=_scopes(row.get("scopes"), number),
        metadata=_metadata(row.get("metadata"), number),
        created_at=created,
        updated_at=now,
        last_used_at=_instant(row.get("last_used_at"), "last_used_at", number),
        expires_at=_instant(row.get("expires_at"), "expires_at", number),
        enabled=_enabled(row.get("enabled"), number),
        origin="imported",
    )


async def import_keys(
    store: Store, path: Path, table: str, clock: Callable[[], float]
) -> ImportResult:
    """Import every row; rows whose hash is already stored are skipped."""
    import asyncio

    records = await asyncio.to_thread(read_source, path, table, clock())
    fresh = [r for r in records if await store.find_by_hash(r.key_hash) is None]
    unique = list({r.key_hash: r for r in fresh}.values())
    imported = await store.insert_keys(unique)
    return ImportResult(read=len(records), imported=imported, skipped=len(records) - imported)
