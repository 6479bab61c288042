"""``keystile keys ...``: create, list, show, update, revoke, rotate, delete, import."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keystile.cli import args as types
from keystile.cli.context import Cli
from keystile.cli.output import emit_json, key_detail, key_json, key_table, table
from keystile.core.model import KeyRecord
from keystile.manage.access import reachable_routes
from keystile.manage.importer import import_keys
from keystile.manage.service import UNSET, Rotation

SAVE_IT_NOW = "Save it now: this key is shown only once and cannot be recovered."


def _expiry_options(parser: argparse.ArgumentParser, clearable: bool = False) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--expires-in", type=types.future_in, metavar="DURATION",
                       help="expire after this long, e.g. 30d, 12h")  # fmt: skip
    group.add_argument("--expires-at", type=types.instant, metavar="ISO-8601",
                       help="expire at this time, e.g. 2027-01-31T00:00:00Z")  # fmt: skip
    if clearable:
        group.add_argument("--no-expiry", action="store_true", help="never expire")


def _policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allowed-ip",
        action="append",
        metavar="CIDR",
        help="allow only from this address or network (repeatable; * for any)",
    )
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        type=types.limit,
        metavar="NAME=N",
        help="e.g. per_minute=60, quota_day=10000 (repeatable)",
    )


def credential_options(parser: argparse.ArgumentParser, clearable: bool = False) -> None:
    """--credential NAME (and, for a change, --no-credential): by name, never a value."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--credential", metavar="NAME",
                       help="bind to the upstream credential [credentials.NAME]")  # fmt: skip
    if clearable:
        group.add_argument("--no-credential", action="store_true", help="remove the binding")


def credential_change(args: argparse.Namespace) -> str | None:
    """The binding an update asks for: a name, None to remove it, or UNSET."""
    if args.no_credential:
        return None
    value: str | None = UNSET if args.credential is None else args.credential
    return value


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="manage API keys")
    commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    p = commands.add_parser("create", help="create a key and print it once")
    p.add_argument("--name", required=True, help="what the key is for")
    p.add_argument("--scope", action="append", default=[], help="grant a scope (repeatable)")
    p.add_argument("--owner", help="who the key belongs to (free text)")
    p.add_argument("--user", metavar="USER_ID", help="the user (and so team) it belongs to")
    p.add_argument("--metadata", action="append", default=[], type=types.pair,
                   metavar="KEY=VALUE", help="attach metadata (repeatable)")  # fmt: skip
    _expiry_options(p)
    _policy_options(p)
    credential_options(p)
    _json_option(p)
    p.set_defaults(run=create)

    p = commands.add_parser("list", help="list keys (never the key or its hash)")
    p.add_argument("--all", action="store_true", help="include revoked, expired and deleted keys")
    p.add_argument("--owner", type=types.text, help="only keys of this owner")
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
    _policy_options(p)
    credential_options(p, clearable=True)
    _json_option(p)
    p.set_defaults(run=update)

    for name, helptext, run in (
        ("revoke", "disable a key for good (the record stays)", revoke),
        ("expire", "expire a key now (the record stays)", expire),
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


def _print_record(record: KeyRecord, args: argparse.Namespace, cli: Cli) -> int:
    now = cli.keys.clock()
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


async def create(args: argparse.Namespace, cli: Cli) -> int:
    issued = await cli.keys.create(
        args.name,
        scopes=args.scope,
        owner=args.owner,
        user_id=args.user,
        expires_at=args.expires_at or args.expires_in,
        metadata=dict(args.metadata),
        allowed_ips=args.allowed_ip,
        limits=dict(args.limit),
        credential=args.credential,
    )
    _print_issued(issued.key, issued.record, args.json, cli.keys.clock())
    return 0


async def list_keys(args: argparse.Namespace, cli: Cli) -> int:
    records = await cli.keys.list(include_inactive=args.all, owner=args.owner)
    now = cli.keys.clock()
    if args.json:
        emit_json([key_json(r, now) for r in records])
    elif records:
        print(key_table(records, now))
    else:
        print("No keys." + ("" if args.all else " (--all includes revoked, expired, deleted)"),
              file=sys.stderr)  # fmt: skip
    return 0


async def show(args: argparse.Namespace, cli: Cli) -> int:
    """The key, and the routes it can reach with where each scope comes from."""
    record = await cli.keys.get(args.id)
    routes = reachable_routes(record, cli.settings.routes)
    if args.json:
        emit_json({**key_json(record, cli.keys.clock()), "routes": routes})
        return 0
    print(key_detail(record, cli.keys.clock()))
    if routes:
        rows = [[r["name"], r["path"], "; ".join(f"{scope} via {','.join(via)}"
                                                for scope, via in r["via"].items()) or "-"]
                for r in routes]  # fmt: skip
        print()
        print(table(rows, ["ROUTE", "PATH", "SCOPES"]))
    return 0


async def update(args: argparse.Namespace, cli: Cli) -> int:
    current = await cli.keys.get(args.id)
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
    record = await cli.keys.update(
        args.id,
        name=args.name,
        scopes=scopes,
        owner=UNSET if args.owner is None else args.owner,
        expires_at=expires_at,
        metadata=metadata,
        enabled=args.enabled,
        allowed_ips=UNSET if args.allowed_ip is None else args.allowed_ip,
        limits={**current.limits, **dict(args.limit)} if args.limit else None,
        credential=credential_change(args),
    )
    return _print_record(record, args, cli)


async def revoke(args: argparse.Namespace, cli: Cli) -> int:
    return _print_record(await cli.keys.revoke(args.id), args, cli)


async def expire(args: argparse.Namespace, cli: Cli) -> int:
    return _print_record(await cli.keys.expire(args.id), args, cli)


async def delete(args: argparse.Namespace, cli: Cli) -> int:
    return _print_record(await cli.keys.delete(args.id), args, cli)


async def rotate(args: argparse.Namespace, cli: Cli) -> int:
    rotation: Rotation = await cli.keys.rotate(args.id, args.grace)
    now = cli.keys.clock()
    new, old = rotation.new.record, rotation.old
    if args.json:
        emit_json({"key": rotation.new.key, **key_json(new, now), "old": key_json(old, now)})
        return 0
    until = key_json(old, now)["expires_at"]
    _print_issued(rotation.new.key, new, False, now, extra=f", replacing {old.id}")
    print(f"The old key {old.id} stops working at {until}.")
    return 0


async def import_cmd(args: argparse.Namespace, cli: Cli) -> int:
    result = await import_keys(cli.keys.store, args.source, args.table, cli.keys.clock)
    if args.json:
        emit_json({"read": result.read, "imported": result.imported, "skipped": result.skipped})
    else:
        print(f"Imported {result.imported} of {result.read} keys from {args.source} "
              f"({result.skipped} already present).")  # fmt: skip
    return 0
