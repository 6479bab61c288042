"""The ``keystile`` command line: serve, keys ..., config check."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keystile import __version__, config
from keystile.cli import accounts as accounts_cli
from keystile.cli import keys as keys_cli
from keystile.cli import store_cmd as store_cli
from keystile.cli.accounts import user_create_admin
from keystile.cli.args import positive_int
from keystile.cli.context import Cli
from keystile.cli.output import emit_json, table
from keystile.core.errors import ConfigError, InvalidInput, KeystileError, NotFound, StoreError
from keystile.identity.sessions import LoginThrottle, SessionService
from keystile.limits.shared_limits import sharing
from keystile.manage.accounts import AccountService
from keystile.manage.queries import Store
from keystile.manage.service import KeyService
from keystile.serve.intake import intake_summary, receivers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keystile",
        description="External-auth sidecar: per-client API keys for nginx, Envoy and friends.",
    )
    parser.add_argument("--version", action="version", version=f"keystile {__version__}")
    parser.add_argument(
        "--create-store",
        action="store_true",
        help="create the key store if it does not exist (serve always does; other commands "
        "refuse, so a mistyped KEYSTILE_DB or a store deleted under a server is not "
        "silently replaced by an empty one)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="run the auth server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settings a first run needs (environment, or the TOML file):\n"
               "  KEYSTILE_LISTEN   address to listen on (default 127.0.0.1:8700)\n"
               "  KEYSTILE_DB       the store: an SQLite file (default\n"
               "                    ~/.local/share/keystile/keystile.db) or postgresql://...\n"
               "  KEYSTILE_CONFIG   a TOML file with routes and settings\n"
               "  KEYSTILE_WORKERS  processes sharing the port (or --workers N)\n"
               "every setting: docs/configuration.md; check them first with\n"
               "`keystile config check --connect`. Stop with Ctrl-C or SIGTERM.",
    )  # fmt: skip
    serve.add_argument("--workers", type=positive_int, metavar="N",
                       help="processes sharing the port, one event loop each "
                            "(default: the workers setting, 1)")  # fmt: skip
    serve.set_defaults(run=None, serve=True)

    keys_cli.register(sub)
    accounts_cli.register(sub)
    store_cli.register(sub)

    cfg = sub.add_parser("config", help="inspect the configuration")
    cfg_commands = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check = cfg_commands.add_parser("check", help="validate settings and show them (no secrets)")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.add_argument("--connect", action="store_true",
                       help="also try the store, Redis, the OpenID provider and the listening "
                            "addresses, and say per item what is wrong and what to do")  # fmt: skip
    check.set_defaults(run=None, check=True)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"keystile: error: {message}", file=sys.stderr)
    return code


def oidc_status(settings: config.Settings) -> str:
    """Whether "Sign in with ..." is on, and what it still lacks when it is not."""
    if settings.oidc_enabled:
        return (f"OpenID Connect sign-in: on ({settings.oidc_name}, issuer "
                f"{settings.oidc_issuer}, redirect URI {settings.oidc_external_url}"
                "/_keystile/oidc/callback).")  # fmt: skip
    missing = settings.oidc_missing
    if len(missing) == 4:
        return "OpenID Connect sign-in: off (not configured)."
    return f"OpenID Connect sign-in: off (missing: {', '.join(missing)})."


def connect_check(settings: config.Settings, as_json: bool, create: bool) -> int:
    """``config check --connect``: 0 when every item is ok, else 1."""
    from keystile.cli.connect import connect_all, report

    findings = asyncio.run(connect_all(settings, create))
    config_check(settings, as_json, connected=[dataclasses.asdict(f) for f in findings])
    if not as_json:
        print()
        print(report(findings))
        failed = [f.item for f in findings if not f.ok]
        print("Everything answers." if not failed else f"Not ready: {', '.join(failed)}.")
    return 0 if all(f.ok for f in findings) else 1


def config_check(settings: config.Settings, as_json: bool,
                 connected: list[dict[str, Any]] | None = None) -> int:  # fmt: skip
    """Print the effective settings and routes; injected values are never shown."""
    rows = config.describe(settings)
    routes = [
        {"name": r.name, "path": r.pattern, "methods": sorted(r.methods), "host": r.host,
         "scopes": sorted(r.scopes), "inject": [name for name, _ in (*r.inject, *r.slots)],
         "credentials": {header: sorted(slot.values) for header, slot in r.slots}}
        for r in settings.routes.routes
    ]  # fmt: skip
    credentials = sorted(settings.routes.credentials)  # names only: values are never shown
    if as_json:
        emit_json({"settings": {name: value for name, value, _ in rows}, "routes": routes,
                   "credentials": credentials,
                   "oidc": {"enabled": settings.oidc_enabled,
                            "missing": settings.oidc_missing},
                   "limits": {"shared": settings.redis_url is not None,
                              "summary": sharing(settings)},
                   "usage_intake": {"receivers": receivers(settings.usage_syslog_listen,
                                                           settings.grpc_listen),
                                    "summary": intake_summary(settings.usage_syslog_listen,
                                                              settings.grpc_listen)},
                   **({} if connected is None else {"connect": connected})})  # fmt: skip
        return 0
    print(table([[name, value] for name, value, _ in rows], ["SETTING", "VALUE"]))
    if routes:
        route_rows = [
            [r.name, r.pattern, ",".join(sorted(r.methods)) or "*", r.host or "*",
             ",".join(sorted(r.scopes)) or "-",
             ",".join(name for name, _ in (*r.inject, *r.slots)) or "-"]
            for r in settings.routes.routes
        ]  # fmt: skip
        print()
        print(table(route_rows, ["ROUTE", "PATH", "METHODS", "HOST", "SCOPES", "INJECTS"]))
    if credentials:
        print(f"\nUpstream credentials: {', '.join(credentials)}.")
    unmatched = "allow" if settings.routes.allow_unmatched else "deny"
    print(f"\nRequests matching no route: {unmatched}.")
    print(oidc_status(settings))
    print(sharing(settings))
    print(intake_summary(settings.usage_syslog_listen, settings.grpc_listen))
    print("Configuration is valid." if connected is None else "Configuration is valid; connecting:")
    return 0


async def _run_store_command(args: argparse.Namespace, settings: config.Settings) -> int:
    async with await Store.open(settings.db) as store:
        keys = KeyService(
            store,
            settings.hasher(),
            settings.key_prefix,
            credentials=frozenset(settings.routes.credentials),
        )
        sessions = SessionService(store, idle=settings.session_idle_timeout,
                                  absolute=settings.session_absolute_timeout,
                                  throttle=LoginThrottle(settings.login_attempts,
                                                         settings.login_lockout))  # fmt: skip
        code: int = await args.run(args, Cli(keys, AccountService(keys), settings, sessions))
        return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        serving = getattr(args, "serve", False) or getattr(args, "check", False)
        # only serve (and config check, which validates it) reads injected secrets
        settings = config.load(secrets=serving)
        if getattr(args, "check", False):
            if not args.connect:
                return config_check(settings, args.json)
            return connect_check(settings, args.json, args.create_store)
        if getattr(args, "store_copy", None):
            code: int = asyncio.run(args.store_copy(args))
            return code
        if getattr(args, "serve", False):
            from keystile.server import serve

            if args.workers is not None:
                settings = dataclasses.replace(settings, workers=args.workers)
            return serve(settings)
        # the first admin of a fresh install comes before any store exists
        bootstrap = getattr(args, "run", None) is user_create_admin
        missing = isinstance(settings.db, Path) and not settings.db.exists()
        if not args.create_store and not bootstrap and missing:
            hint = "start `keystile serve` once (it creates it), check KEYSTILE_DB"
            return _fail(f"no key store at {settings.db}: {hint}, or pass --create-store", 1)
        return asyncio.run(_run_store_command(args, settings))
    except (ConfigError, InvalidInput) as exc:
        return _fail(str(exc), 2)
    except NotFound as exc:
        return _fail(str(exc), 1)
    except StoreError as exc:
        return _fail(f"key store: {exc}", 1)
    except KeystileError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
