"""``keystile keys ...``: create, list, show, update, revoke, rotate, delete, import."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keystile.cli import args as types
from keystile.cli.output import emit_json, key_detail, key_json, key_table
from keystile.importer import import_keys
from keystile.service import UNSET, KeyService, Rotation
from keystile.store import KeyRecord

SAVE_IT_NOW = "Save it now: this key is shown only once and cannot be recovered."


def _expiry_options(parser: argparse.ArgumentParser, clearable: bool = False) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--expires-in", type=types.future_in, metavar="DURATION",
                       help="expire after this long, e.g. 30d, 12h")  # fmt: skip
    group.add_argument("--expires-at", type=types.instant, metavar="ISO-8601",
                       help="expire at this time, e.g. 2027-01-31T00:00:00Z")  # fmt: skip
    if clearable:
        group.add_argument("--no-expiry", action="store_true", help="never expire")


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="manage API keys")
    commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    p = commands.add_parser("create", help="create a key and print it once")
    p.add_argument("--name", required=True, help="what the key is for")
    p.add_argument("--scope", action="append", default=[], help="grant a scope (repeatable)")
    p.add_argument("--owner", help="user or team the key belongs to")
    p.add_argument("--metadata", action="append", default=[], type=types.pair,
                   metavar="KEY=VALUE", help="attach metadata (repeatable)")  # fmt: skip
    _expiry_options(p)
    _json_option(p)
    p.set_defaults(run=create)

    p = commands.add_parser("list", help="list keys (never the key or its hash)")
    p.add_argument("--all", action="store_true", help="include revoked, expired and deleted keys")
    p.add_argument("--owner", help="only keys of this owner")
    _json_option(p)
    p.set_defaults(run=list_keys)

    p = commands.add_parser("show", help="show one key")
    p.add_argument("id")
    _json_option(p)
    p.set_defaults(run=show)

    p = commands.add_parser("update", help="change a key's settings")
    p.add_argument("id")
    p.add_argument("--name")
    p.add_argument("--scope", action="append", help="replace the scopes (repeatable)")
    p.add_argument("--add-scope", action="append", default=[], metavar="SCOPE")
    p.add_argument("--remove-scope", action="append", default=[], metavar="SCOPE")
    p.add_argument("--owner")
    p.add_argument("--metadata", action="append", default=[], type=types.pair,
                   metavar="KEY=VALUE", help="set a metadata entry (repeatable)")  # fmt: skip
    p.add_argument("--remove-metadata", action="append", default=[], metavar="KEY")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_const", const=True)
    state.add_argument("--disable", dest="enabled", action="store_const", const=False)
    _expiry_options(p, clearable=True)
    _json_option(p)
    p.set_defaults(run=update)

    for name, helptext, run in (
        ("revoke", "disable a key for good (the record stays)", revoke),
        ("delete", "delete a key (soft: history stays)", delete),
    ):
        p = commands.add_parser(name, help=helptext)
        p.add_argument("id")
        _json_option(p)
        p.set_defaults(run=run)

    p = commands.add_parser("rotate", help="replace a key; the old one works during the grace")
    p.add_argument("id")
    p.add_argument(
        "--grace",
        type=types.duration,
        default=0.0,
        metavar="DURATION",
        help="how long the old key keeps working (default 0: stops at once)",
    )
    _json_option(p)
    p.set_defaults(run=rotate)

    p = commands.add_parser("import", help="adopt SHA-256 hashed keys from another SQLite file")
    p.add_argument("source", type=Path, help="SQLite file holding the keys")
    p.add_argument("--table", default="api_keys", help="table name (default api_keys)")
    _json_option(p)
    p.set_defaults(run=import_cmd)


def _print_record(record: KeyRecord, args: argparse.Namespace, service: KeyService) -> int:
    now = service.clock()
    if args.json:
        emit_json(key_json(record, now))
    else:
        print(key_detail(record, now))
    return 0


def _print_issued(key: str, record: KeyRecord, as_json: bool, now: float, extra: str = "") -> None:
    if as_json:
        emit_json({"key": key, **key_json(record, now)})
        return
    print(f"Created key {record.id} ({record.name}){extra}")
    print()
    print(f"    {key}")
    print()
    print(SAVE_IT_NOW)


async def create(args: argparse.Namespace, service: KeyService) -> int:
    issued = await service.create(
        args.name,
        scopes=args.scope,
        owner=args.owner,
        expires_at=args.expires_at or args.expires_in,
        metadata=dict(args.metadata),
    )
    _print_issued(issued.key, issued.record, args.json, service.clock())
    return 0


async def list_keys(args: argparse.Namespace, service: KeyService) -> int:
    records = await service.list(include_inactive=args.all, owner=args.owner)
    now = service.clock()
    if args.json:
        emit_json([key_json(r, now) for r in records])
    elif records:
        print(key_table(records, now))
    else:
        print("No keys." + ("" if args.all else " (--all includes revoked, expired, deleted)"),
              file=sys.stderr)  # fmt: skip
    return 0


async def show(args: argparse.Namespace, service: KeyService) -> int:
    return _print_record(await service.get(args.id), args, service)


async def update(args: argparse.Namespace, service: KeyService) -> int:
    current = await service.get(args.id)
    scopes = None
    if args.scope is not None or args.add_scope or args.remove_scope:
        base = set(args.scope if args.scope is not None else current.scopes)
        scopes = sorted((base | set(args.add_scope)) - set(args.remove_scope))
    metadata = None
    if args.metadata or args.remove_metadata:
        metadata = {**current.metadata, **dict(args.metadata)}
        for key in args.remove_metadata:
            metadata.pop(key, None)
    expires_at = UNSET
    if args.no_expiry:
        expires_at = None
    elif args.expires_at or args.expires_in:
        expires_at = args.expires_at or args.expires_in
    record = await service.update(
        args.id,
        name=args.name,
        scopes=scopes,
        owner=UNSET if args.owner is None else args.owner,
        expires_at=expires_at,
        metadata=metadata,
        enabled=args.enabled,
    )
    return _print_record(record, args, service)


async def revoke(args: argparse.Namespace, service: KeyService) -> int:
    return _print_record(await service.revoke(args.id), args, service)


async def delete(args: argparse.Namespace, service: KeyService) -> int:
    return _print_record(await service.delete(args.id), args, service)


async def rotate(args: argparse.Namespace, service: KeyService) -> int:
    rotation: Rotation = await service.rotate(args.id, args.grace)
    now = service.clock()
    new, old = rotation.new.record, rotation.old
    if args.json:
        emit_json({"key": rotation.new.key, **key_json(new, now), "old": key_json(old, now)})
        return 0
    until = key_json(old, now)["expires_at"]
    _print_issued(rotation.new.key, new, False, now, extra=f", replacing {old.id}")
    print(f"The old key {old.id} stops working at {until}.")
    return 0


async def import_cmd(args: argparse.Namespace, service: KeyService) -> int:
    result = await import_keys(service.store, args.source, args.table, service.clock)
    if args.json:
        emit_json({"read": result.read, "imported": result.imported, "skipped": result.skipped})
    else:
        print(f"Imported {result.imported} of {result.read} keys from {args.source} "
              f"({result.skipped} already present).")  # fmt: skip
    return 0
