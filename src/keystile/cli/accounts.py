"""``keystile teams|users|groups|audit``: the same operations as the admin API."""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
import time
from typing import Any

from keystile.cli import args as types
from keystile.cli.context import Cli
from keystile.cli.keys import credential_change, credential_options
from keystile.cli.output import emit_json, table
from keystile.core.durations import format_instant
from keystile.core.errors import InvalidInput
from keystile.limits.quotas import period
from keystile.limits.shared_limits import connect
from keystile.limits.tokens import TokenBudgets
from keystile.limits.usage import spend_of, summarize
from keystile.manage.explain import explain
from keystile.manage.queries import ROLES, KeyFilter
from keystile.serve.cache import CachedLookup
from keystile.serve.gate import Authorizer, rules_of
from keystile.serve.lookup import KeyLookup
from keystile.serve.static_keys import StaticKeys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    teams = sub.add_parser("teams", help="manage teams").add_subparsers(
        dest="teams_command", required=True, metavar="COMMAND")  # fmt: skip
    p = teams.add_parser("create", help="create a team")
    p.add_argument("name")
    p.add_argument("--limit", action="append", default=[], type=types.limit, metavar="NAME=N")
    p.add_argument("--allowed-ip", action="append", metavar="CIDR",
                   help="the team's keys work only from here (repeatable)")  # fmt: skip
    credential_options(p)
    _json(p, team_create)
    _json(teams.add_parser("list", help="list teams"), team_list)
    p = teams.add_parser("update", help="rename a team or change its upstream credential")
    p.add_argument("team", metavar="TEAM_ID", type=types.text)
    p.add_argument("--name", type=types.text)
    credential_options(p, clearable=True)
    _json(p, team_update)

    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="users_command", required=True, metavar="COMMAND")  # fmt: skip
    p = users.add_parser("create", help="create a user (who may sign in once given a password)")
    p.add_argument("external_id", help="the name they sign in with, e.g. an email address")
    p.add_argument("--team", metavar="TEAM_ID", type=types.text)
    p.add_argument("--role", choices=ROLES, default="member")
    p.add_argument("--email", type=types.email)
    _json(p, user_create)
    p = users.add_parser("create-admin", help="first admin on a fresh install: creates an "
                         "admin and prints a generated password once")  # fmt: skip
    p.add_argument("external_id", help="the name they sign in with")
    p.add_argument("--email", type=types.email)
    _json(p, user_create_admin)
    p = users.add_parser("list", help="list users")
    p.add_argument("--team", metavar="TEAM_ID", type=types.text)
    _json(p, user_list)
    p = users.add_parser("update", help="change a user's role, email or team")
    p.add_argument("user", help="user id or sign-in name")
    p.add_argument("--role", choices=ROLES)
    p.add_argument("--email", type=types.email)
    p.add_argument("--team", metavar="TEAM_ID", type=types.text)
    _json(p, user_update)
    for name, disabled in (("disable", True), ("enable", False)):
        p = users.add_parser(name, help=f"{name} a user (a disabled user's sessions and keys "
                             "stop at once)")  # fmt: skip
        p.add_argument("user", help="user id or sign-in name")
        p.set_defaults(disabled=disabled)
        _json(p, user_update)
    p = users.add_parser("set-password", help="set a user's password (prompted; never in argv)")
    p.add_argument("user", help="user id or sign-in name")
    p.add_argument("--stdin", action="store_true",
                   help="read the password from the first line of standard input")  # fmt: skip
    _json(p, user_set_password)
    p = users.add_parser("sessions", help="a user's open browser sessions")
    p.add_argument("user", help="user id or sign-in name")
    _json(p, user_sessions)
    p = users.add_parser("end-sessions", help="end every browser session of a user")
    p.add_argument("user", help="user id or sign-in name")
    _json(p, user_end_sessions)

    sessions = sub.add_parser("sessions", help="browser sessions").add_subparsers(
        dest="sessions_command", required=True, metavar="COMMAND")  # fmt: skip
    p = sessions.add_parser("list", help="open sessions, oldest first")
    p.add_argument("--user", help="user id or sign-in name")
    _json(p, session_list)
    p = sessions.add_parser("revoke", help="end one session (every server, within a poll)")
    p.add_argument("session_id")
    _json(p, session_revoke)

    groups = sub.add_parser("groups", help="manage groups").add_subparsers(
        dest="groups_command", required=True, metavar="COMMAND")  # fmt: skip
    p = groups.add_parser("create", help="create a group that grants scopes")
    p.add_argument("name")
    p.add_argument("--scope", action="append", default=[])
    _json(p, group_create)
    _json(groups.add_parser("list", help="list groups"), group_list)
    p = groups.add_parser("update", help="rename a group or replace its scopes")
    p.add_argument("group_id")
    p.add_argument("--name")
    p.add_argument("--scope", action="append")
    _json(p, group_update)
    p = groups.add_parser("delete", help="delete a group (its keys lose its scopes)")
    p.add_argument("group_id")
    _json(p, group_delete)
    for name, member in (("add-user", True), ("remove-user", False)):
        p = groups.add_parser(
            name, help=f"{name.split('-')[0]} a user {'to' if member else 'from'} a group"
        )
        p.add_argument("group_id")
        p.add_argument("user", help="user id or sign-in name")
        p.set_defaults(member=member)
        _json(p, user_membership)
    for name, member in (("add-key", True), ("remove-key", False)):
        p = groups.add_parser(
            name, help=f"{name.split('-')[0]} a key {'to' if member else 'from'} a group"
        )
        p.add_argument("group_id")
        p.add_argument("key_id")
        p.set_defaults(member=member)
        _json(p, membership)

    p = sub.add_parser("usage", help="requests of a key: allowed, denied by reason, per route; "
                       "tokens and their cost")  # fmt: skip
    p.add_argument("key_id")
    p.add_argument("--since", type=types.instant, metavar="ISO-8601")
    _json(p, usage)

    p = sub.add_parser("spend", help="tokens reported (and their cost) per key, for a team, "
                       "a user, a key or everyone")  # fmt: skip
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--team", metavar="TEAM_ID")
    scope.add_argument("--user", metavar="USER_ID")
    scope.add_argument("--key", metavar="KEY_ID")
    p.add_argument("--since", type=types.instant, metavar="ISO-8601",
                   help="default: the start of this UTC month")  # fmt: skip
    _json(p, spend_cmd)

    p = sub.add_parser("explain", help="what keystile would decide for a key on a request")
    p.add_argument("key_id")
    p.add_argument("url", help="path (and query) or URL, e.g. /v1/chat/completions")
    p.add_argument("--method", default="GET")
    p.add_argument("--ip", metavar="ADDRESS", help="the client's address")
    p.add_argument("--header", "-H", action="append", default=[], metavar="'NAME: VALUE'",
                   help="a header of the request (repeatable), screened as the auth path "
                        "screens it")  # fmt: skip
    _json(p, explain_cmd)

    audit = sub.add_parser("audit", help="read the audit log").add_subparsers(
        dest="audit_command", required=True, metavar="COMMAND")  # fmt: skip
    p = audit.add_parser("list", help="list changes, oldest first")
    p.add_argument(
        "--target",
        metavar="ID",
        type=types.text,
        help="only changes of this key, team, user or group",
    )
    p.add_argument("--action", type=types.text, help="e.g. key.rotate")
    p.add_argument("--actor", type=types.text, help="who made the change (a key id, or cli)")
    p.add_argument("--limit", type=types.page_size, default=100)
    _json(p, audit_list)


def _json(parser: argparse.ArgumentParser, run: object) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def _show(args: argparse.Namespace, data: dict[str, object] | list[dict[str, object]],
          headers: list[str]) -> int:  # fmt: skip
    rows = data if isinstance(data, list) else [data]
    if args.json:
        emit_json(data)
    else:
        print(table([[_cell(row.get(h.lower())) for h in headers] for row in rows], headers))
    return 0


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


TEAM_COLUMNS = ["ID", "NAME", "LIMITS", "CREDENTIAL"]


async def team_create(args: argparse.Namespace, cli: Cli) -> int:
    team = await cli.accounts.create_team(args.name, dict(args.limit),
                                          allowed_ips=args.allowed_ip,
                                          credential=args.credential)  # fmt: skip
    return _show(args, team.public(), TEAM_COLUMNS)


async def team_update(args: argparse.Namespace, cli: Cli) -> int:
    team = await cli.accounts.update_team(args.team, args.name,
                                          credential=credential_change(args))  # fmt: skip
    return _show(args, team.public(), TEAM_COLUMNS)


async def team_list(args: argparse.Namespace, cli: Cli) -> int:
    teams = [t.public() for t in await cli.keys.store.list_teams()]
    return _show(args, teams, TEAM_COLUMNS)


USER_COLUMNS = ["ID", "EXTERNAL_ID", "ROLE", "EMAIL", "TEAM_ID", "DISABLED"]
SESSION_COLUMNS = ["ID", "USER_ID", "CREATED_AT", "LAST_SEEN_AT", "EXPIRES_AT", "CLIENT_IP"]


async def user_create(args: argparse.Namespace, cli: Cli) -> int:
    user = await cli.accounts.create_user(args.external_id, args.team, role=args.role,
                                          email=args.email)  # fmt: skip
    return _show(args, user.public(), USER_COLUMNS)


async def user_create_admin(args: argparse.Namespace, cli: Cli) -> int:
    """The first admin, with a generated password shown here once."""
    password = secrets.token_urlsafe(15)
    user = await cli.accounts.create_user(args.external_id, role="admin", email=args.email,
                                          password=password)  # fmt: skip
    if args.json:
        emit_json({**user.public(), "password": password})
        return 0
    print(f"Created admin {user.external_id} ({user.id}).")
    print(f"Password (shown once, save it now): {password}")
    print(f"Change it with: keystile users set-password {user.external_id}")
    return 0


async def user_list(args: argparse.Namespace, cli: Cli) -> int:
    users = [u.public() for u in await cli.keys.store.list_users(args.team)]
    return _show(args, users, USER_COLUMNS)


async def user_update(args: argparse.Namespace, cli: Cli) -> int:
    user = await cli.accounts.find_user(args.user)
    changes: dict[str, Any] = {}
    if getattr(args, "role", None) is not None:
        changes["role"] = args.role
    if getattr(args, "email", None) is not None:
        changes["email"] = args.email
    if getattr(args, "team", None) is not None:
        changes["team_id"] = args.team
    disabled = getattr(args, "disabled", None)
    user = await cli.accounts.update_user(user.id, disabled=disabled, **changes)
    return _show(args, user.public(), USER_COLUMNS)


def _read_password(use_stdin: bool) -> str:
    if use_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise InvalidInput("password", "the two entries differ")
    return first


async def user_set_password(args: argparse.Namespace, cli: Cli) -> int:
    user = await cli.accounts.find_user(args.user)
    user = await cli.accounts.set_password(user.id, _read_password(args.stdin))
    return _show(args, user.public(), USER_COLUMNS)


def _session_rows(sessions: list[Any]) -> list[dict[str, object]]:
    return [{**s.public(), "created_at": format_instant(s.created_at),
             "last_seen_at": format_instant(s.last_seen_at),
             "expires_at": format_instant(s.expires_at)} for s in sessions]  # fmt: skip


async def user_sessions(args: argparse.Namespace, cli: Cli) -> int:
    user = await cli.accounts.find_user(args.user)
    return _show(args, _session_rows(await cli.sessions.list(user.id)), SESSION_COLUMNS)


async def user_end_sessions(args: argparse.Namespace, cli: Cli) -> int:
    user = await cli.accounts.find_user(args.user)
    count = await cli.sessions.revoke_user(user.id, "cli")
    return _show(args, {"user_id": user.id, "ended": count}, ["USER_ID", "ENDED"])


async def session_list(args: argparse.Namespace, cli: Cli) -> int:
    user_id = None if args.user is None else (await cli.accounts.find_user(args.user)).id
    return _show(args, _session_rows(await cli.sessions.list(user_id)), SESSION_COLUMNS)


async def session_revoke(args: argparse.Namespace, cli: Cli) -> int:
    session = await cli.sessions.revoke(args.session_id, "cli")
    return _show(args, _session_rows([session])[0], [*SESSION_COLUMNS, "REVOKED_AT"])


async def user_membership(args: argparse.Namespace, cli: Cli) -> int:
    user = await cli.accounts.find_user(args.user)
    changed = await cli.accounts.set_user_membership(args.group_id, user.id, args.member)
    data = {"group_id": args.group_id, "user_id": user.id, "member": args.member,
            "changed": changed}  # fmt: skip
    return _show(args, data, ["GROUP_ID", "USER_ID", "MEMBER", "CHANGED"])


async def group_create(args: argparse.Namespace, cli: Cli) -> int:
    group = await cli.accounts.create_group(args.name, args.scope)
    return _show(args, group.public(), ["ID", "NAME", "SCOPES"])


async def group_list(args: argparse.Namespace, cli: Cli) -> int:
    groups = [g.public() for g in await cli.keys.store.list_groups()]
    return _show(args, groups, ["ID", "NAME", "SCOPES"])


async def group_update(args: argparse.Namespace, cli: Cli) -> int:
    group = await cli.accounts.update_group(args.group_id, args.name, args.scope)
    return _show(args, group.public(), ["ID", "NAME", "SCOPES"])


async def group_delete(args: argparse.Namespace, cli: Cli) -> int:
    group = await cli.accounts.delete_group(args.group_id)
    return _show(args, group.public(), ["ID", "NAME", "SCOPES"])


async def membership(args: argparse.Namespace, cli: Cli) -> int:
    changed = await cli.accounts.set_membership(args.group_id, args.key_id, args.member)
    data = {"group_id": args.group_id, "key_id": args.key_id, "member": args.member,
            "changed": changed}  # fmt: skip
    return _show(args, data, ["GROUP_ID", "KEY_ID", "MEMBER", "CHANGED"])


async def audit_list(args: argparse.Namespace, cli: Cli) -> int:
    entries = await cli.keys.store.list_audit(target_id=args.target, action=args.action,
                                              actor=args.actor, limit=args.limit)  # fmt: skip
    data = [{**e.public(), "at": format_instant(e.at)} for e in entries]
    return _show(args, data, ["SEQ", "AT", "ACTOR", "ACTION", "TARGET_TYPE", "TARGET_ID"])


async def usage(args: argparse.Namespace, cli: Cli) -> int:
    """Counts written by servers (every few seconds and at shutdown)."""
    record = await cli.keys.get(args.key_id)
    since = args.since or 0.0
    summary = summarize(await cli.keys.store.usage(record.id, since))
    tokens = await spend_of(cli.keys.store, [record.id], since, cli.settings.routes.routes)
    if args.json:
        emit_json({"key_id": record.id, **summary, **tokens})
        return 0
    print(f"{record.id} ({record.name}): {summary['allowed']} allowed, last used "
          f"{format_instant(record.last_used_at)}")  # fmt: skip
    for reason, count in summary["denied"].items():  # type: ignore[attr-defined]
        print(f"  denied {reason}: {count}")
    for route, count in summary["allowed_by_route"].items():  # type: ignore[attr-defined]
        print(f"  route {route}: {count}")
    cost = "" if tokens["cost"] is None else f", cost {tokens['cost']:.4f}"
    print(f"  tokens: {tokens['tokens']}{cost}")
    return 0


async def spend_cmd(args: argparse.Namespace, cli: Cli) -> int:
    """Tokens per key over a team, a user, a key, or every key."""
    store = cli.keys.store
    since = args.since if args.since is not None else period("quota_month", time.time())[0]
    if args.key:
        keys = [await cli.keys.get(args.key)]
    else:
        keys = await store.find_keys(KeyFilter(include_inactive=True, team_id=args.team,
                                               user_id=args.user), 0.0)  # fmt: skip
    found = await spend_of(store, [k.id for k in keys], since, cli.settings.routes.routes)
    names = {k.id: k.name for k in keys}
    if args.json:
        emit_json({"since": format_instant(since), **found})
        return 0
    rows = [[key_id, names.get(key_id, "?"), str(tokens),
             "-" if key_id not in found["cost_by_key"] else f"{found['cost_by_key'][key_id]:.4f}"]
            for key_id, tokens in found["tokens_by_key"].items()]  # fmt: skip
    print(table(rows, ["KEY_ID", "NAME", "TOKENS", "COST"]))
    cost = "" if found["cost"] is None else f", cost {found['cost']:.4f}"
    print(f"\n{found['tokens']} tokens since {format_instant(since)}{cost}")
    return 0


async def explain_cmd(args: argparse.Namespace, cli: Cli) -> int:
    settings = cli.settings
    lookup = KeyLookup(cli.keys.store, settings.hasher(), settings.key_format, StaticKeys())
    rules = rules_of(settings)
    headers = {}
    for line in args.header:
        name, colon, value = line.partition(":")
        if not colon:
            raise InvalidInput("--header", f"{line[:60]!r}: give it as 'Name: value'")
        headers[name.strip()] = value.strip()
    record = await cli.keys.get(args.key_id)
    # the server's limits as it reads them: stored usage and tokens, and Redis when shared
    shared = None
    if settings.redis_url:
        shared = connect(settings.redis_url, settings.redis_prefix,
                         fallback=settings.redis_unavailable == "local",
                         timeout=settings.redis_timeout)  # fmt: skip
    budgets = TokenBudgets(cli.keys.store.tokens_since)
    authorizer = Authorizer(rules, CachedLookup(lookup), shared=shared, budgets=budgets)
    try:
        answer = await explain(authorizer, record, args.method, args.url, args.ip, headers)
    finally:
        if shared is not None:
            await shared.close()
    if not settings.routes.routes:
        print("note: no routes loaded (is KEYSTILE_CONFIG set to the server's file?); "
              "the server may decide otherwise", file=sys.stderr)  # fmt: skip
    if args.json:
        emit_json(answer)
        return 0
    verdict = "ALLOW" if answer["allowed"] else f"DENY ({answer['reason']}, {answer['detail']})"
    print(f"{verdict}: {answer['why']}")
    for name in ("route", "required_scopes", "granted_scopes", "via", "client_ip",
                 "allowed_ips", "team_allowed_ips", "retry_after"):  # fmt: skip
        if answer.get(name) is not None:
            print(f"  {name}: {answer[name]}")
    return 0
