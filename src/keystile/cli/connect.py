"""``keystile config check --connect``: the settings tried against the world, each
item answered ok, or what is wrong and what to do.

    store     opened (SQLite file or PostgreSQL: reachable, schema there,
              migrations applied as serve would) and queried
    redis     PING within redis.timeout, when limits and budgets are shared
    oidc      the discovery document and the keys (JWKS), when sign-in is on
    listen    each listening address free to bind (a running keystile holds
              them: said so), the usage intake's UDP port included

Nothing is changed except what ``serve`` would do on its first start (create a
SQLite store only with ``--create-store``; apply migrations).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from keystile.config import Settings
from keystile.core.errors import KeystileError
from keystile.core.urls import redact
from keystile.manage.queries import Store
from keystile.serve import ports


@dataclass(frozen=True, slots=True)
class Finding:
    item: str
    ok: bool
    what: str  # ok: what was found; else what is wrong
    fix: str = ""  # what to do (failures only)


async def check_store(settings: Settings, create: bool) -> Finding:
    db = settings.db
    if isinstance(db, Path) and not db.exists() and not create:
        fix = "start `keystile serve` once (it creates it), or check KEYSTILE_DB"
        return Finding("store", False, f"no SQLite store at {db} yet", fix)
    try:
        async with await Store.open(db) as store:
            await store.ping()
            where = store.describe()
    except KeystileError as exc:
        return Finding("store", False, str(exc),
                       "check KEYSTILE_DB, that the server is up and the user may connect "
                       "(docs/scale-out.md)")  # fmt: skip
    return Finding("store", True, f"{where}: reachable, schema current")


async def check_redis(settings: Settings) -> Finding | None:
    if not settings.redis_url:
        return None
    from keystile.limits.shared_limits import connect

    shared = connect(settings.redis_url, settings.redis_prefix,
                     timeout=settings.redis_timeout)  # fmt: skip
    try:
        await shared.ping()
    except KeystileError as exc:
        meanwhile = ("counted per process" if settings.redis_unavailable == "local"
                     else "refused (503 limits_unavailable)")  # fmt: skip
        return Finding("redis", False, str(exc),
                       f"start Redis at {redact(settings.redis_url)} or fix KEYSTILE_REDIS_URL; "
                       f"until then limited keys are {meanwhile}")  # fmt: skip
    finally:
        await shared.close()
    return Finding("redis", True, f"{redact(settings.redis_url)} answers PING")


async def check_oidc(settings: Settings) -> Finding | None:
    if not settings.oidc_enabled:
        return None
    import aiohttp

    from keystile.identity.oidc import OIDCFailure, Provider
    from keystile.server import oidc_config

    config = oidc_config(settings)
    timeout = aiohttp.ClientTimeout(total=settings.oidc_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        provider = Provider(config, http)
        try:
            await provider.metadata()
            keys = await provider.keys()
        except OIDCFailure as exc:
            return Finding("oidc", False, f"{settings.oidc_issuer}: {exc.message} ({exc.detail})",
                           "check oidc.issuer (its /.well-known/openid-configuration must "
                           "load from this machine) and the network to it")  # fmt: skip
    count = len(keys.keys)
    return Finding("oidc", True, f"{settings.oidc_issuer}: discovery and {count} signing "
                   "key(s) loaded")  # fmt: skip


def check_addresses(settings: Settings) -> list[Finding]:
    found = []
    for setting, address, datagram in (
        ("listen", settings.listen, False),
        ("admin_listen", settings.admin_listen, False),
        ("grpc_listen", settings.grpc_listen, False),
        ("usage.syslog_listen", settings.usage_syslog_listen, True),
    ):
        if address is None:
            continue
        shown = f"{address[0]}:{address[1]}{' (udp)' if datagram else ''}"
        why = ports.why_taken(*address, datagram=datagram)
        if why is None:
            found.append(Finding(setting, True, f"{shown} free to bind"))
        else:
            found.append(Finding(setting, False, f"{shown}: {why}",
                                 "stop what holds it (a running keystile holds its own "
                                 "ports: fine) or pick another port"))  # fmt: skip
    return found


async def connect_all(settings: Settings, create: bool) -> list[Finding]:
    """Every check, the slow ones at once."""
    store, redis, oidc = await asyncio.gather(
        check_store(settings, create), check_redis(settings), check_oidc(settings)
    )
    found = [store, *(item for item in (redis, oidc) if item is not None)]
    return found + check_addresses(settings)


def report(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        mark = "ok  " if finding.ok else "FAIL"
        lines.append(f"{mark} {finding.item}: {finding.what}")
        if finding.fix:
            lines.append(f"     -> {finding.fix}")
    return "\n".join(lines)
