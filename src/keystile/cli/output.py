"""How the CLI prints records: aligned text for people, JSON with --json."""

from __future__ import annotations

import sys
from typing import Any

import orjson

from keystile.core.durations import format_instant
from keystile.core.model import KeyRecord

_TIME_FIELDS = ("created_at", "updated_at", "last_used_at", "expires_at", "revoked_at",
                "deleted_at")  # fmt: skip


def emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def key_json(record: KeyRecord, now: float) -> dict[str, Any]:
    data = record.public(now)
    for name in _TIME_FIELDS:
        data[name] = None if data[name] is None else format_instant(data[name])
    return data


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in [headers, *rows]]  # fmt: skip
    return "\n".join(lines)


def key_table(records: list[KeyRecord], now: float) -> str:
    headers = ["ID", "NAME", "PREFIX", "STATE", "OWNER", "SCOPES", "EXPIRES", "LAST USED"]
    rows = [
        [r.id, r.name, r.display_prefix, r.state(now), r.owner or "-", ",".join(r.scopes) or "-",
         format_instant(r.expires_at), format_instant(r.last_used_at)]
        for r in records
    ]  # fmt: skip
    return table(rows, headers)


def key_detail(record: KeyRecord, now: float) -> str:
    data = key_json(record, now)
    lines = []
    for name, value in data.items():
        if isinstance(value, list):
            value = ",".join(value) or "-"
        elif isinstance(value, dict):
            value = orjson.dumps(value).decode() if value else "-"
        elif value is None:
            value = "-"
        lines.append(f"{name + ':':<16}{value}")
    return "\n".join(lines)
