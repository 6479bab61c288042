"""``keystile store copy SRC DST``: move a whole store between SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
from pathlib import Path

from keystile.cli.output import emit_json, table
from keystile.config import parse_db
from keystile.core.errors import ConfigError
from keystile.core.urls import redact
from keystile.manage.queries import Copied, Store, copy_store


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    store = sub.add_parser("store", help="whole-store operations")
    commands = store.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    copy = commands.add_parser(
        "copy",
        help="copy everything (keys, users, teams, groups, sessions, usage, audit) from one "
        "store into another; safe to run again",
        description="SRC and DST are SQLite files (path or sqlite:///path) or postgresql:// "
        "URLs. DST is created and migrated if needed; rows are upserted by id, so a second "
        "run changes nothing. Every copied row is read back and compared.",
    )
    copy.add_argument("source", metavar="SRC")
    copy.add_argument("destination", metavar="DST")
    copy.add_argument("--json", action="store_true", help="print JSON")
    copy.set_defaults(run=None, store_copy=run_copy)


def _location(value: str, what: str) -> Path | str:
    try:
        return parse_db(value)
    except ValueError as exc:
        raise ConfigError(f"{what} {redact(value)!r}: {exc}") from None


async def run_copy(args: argparse.Namespace) -> int:
    source = _location(args.source, "SRC")
    destination = _location(args.destination, "DST")
    if isinstance(source, Path) and not source.exists():
        raise ConfigError(f"SRC {str(source)!r}: no such file (a copy never creates its source)")
    if str(source) == str(destination):
        raise ConfigError("SRC and DST are the same store")
    quiet = args.json

    def progress(copied: Copied) -> None:
        if not quiet:
            print(f"copied {copied.table}: {copied.source} rows", flush=True)

    async with await Store.open(source) as src, await Store.open(destination) as dst:
        done = await copy_store(src, dst, progress)
    if args.json:
        emit_json({"source": redact(str(source)), "destination": redact(str(destination)),
                   "tables": [{"table": c.table, "copied": c.source,
                               "destination_rows": c.destination} for c in done]})  # fmt: skip
        return 0
    print()
    print(table([[c.table, str(c.source), str(c.destination)] for c in done],
                ["TABLE", "COPIED AND VERIFIED", "ROWS IN DST"]))  # fmt: skip
    print(f"\nCopied {sum(c.source for c in done)} rows from {redact(str(source))} to "
          f"{redact(str(destination))}; every one read back and found equal.")  # fmt: skip
    return 0
