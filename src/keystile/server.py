"""The app factory and its wiring: settings in, listening sockets out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import aiohttp
from aiohttp import web
from cachetools import TTLCache

from keystile.admin import PREFIX, admin_app
from keystile.admin.context import ADMIN_CONTEXT
from keystile.config import Settings
from keystile.core.clientip import TrustedProxies
from keystile.core.errors import (
    ConfigError,
    LimitsUnavailable,
    NotFound,
    StoreError,
    StoreUnavailable,
)
from keystile.core.flights import within
from keystile.core.model import KeyRecord
from keystile.core.urls import redact
from keystile.identity.oidc import OIDCConfig, Provider
from keystile.identity.sessions import LoginThrottle, SessionLookup, SessionService
from keystile.identity.sso import KeyPolicy, SelfServiceKeys, SingleSignOn
from keystile.identity.sso import Policy as SSOPolicy
from keystile.limits.policy import InvalidKeyThrottle
from keystile.limits.shared_limits import SharedLimits, connect, sharing
from keystile.limits.tokens import TokenBudgets
from keystile.limits.usage import UsageMeter
from keystile.manage.accounts import AccountService
from keystile.manage.context import AdminContext
from keystile.manage.service import KeyService
from keystile.observe import logs
from keystile.observe.metrics import CONTENT_TYPE, Metrics
from keystile.serve import heap, ports
from keystile.serve.adapters import ADAPTERS
from keystile.serve.cache import CachedLookup
from keystile.serve.gate import GATES, Authorizer, Gate, Judge, aiohttp_handler, rules_of
from keystile.serve.intake import NO_INTAKE, Report, receivers
from keystile.serve.intake.syslog import SyslogListener
from keystile.serve.lookup import KeyLookup
from keystile.serve.static_keys import StaticKeys
from keystile.serve.wire import AuthListener
from keystile.serve.workermetrics import WorkerMetrics
from keystile.serve.workers import supervise
from keystile.store import Store
from keystile.web import oidc as oidc_pages
from keystile.web.signin import HOLDER, SignIn, sign_in_app
from keystile.web.signin import PREFIX as PAGES_PREFIX
from keystile.web.ui import ui_app

if TYPE_CHECKING:  # grpcio is imported only when the gRPC listener is configured
    from keystile.serve.grpc_listener import GrpcListener

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CACHE = web.AppKey("cache", CachedLookup)
SESSION_CACHE = web.AppKey("session_cache", CachedLookup)  # sessions by token hash
METRICS = web.AppKey("metrics", Metrics)
AUTHORIZER = web.AppKey("authorizer", Authorizer)
ADMIN_APP = web.AppKey("admin_app", web.Application)
# what the separate admin listener serves: the admin API under /api/v1, as documented
ADMIN_ROOT = web.AppKey("admin_root", web.Application)
USAGE = web.AppKey("usage", UsageMeter)
DENIALS = web.AppKey("denials", logs.DenialLog)
PAGES = web.AppKey("pages", web.Application)  # sign-in pages under /_keystile

log = logging.getLogger("keystile.server")
T = TypeVar("T")
SHUTDOWN_GRACE = 5.0  # seconds requests in flight get to finish
READY_TIMEOUT = 1.0  # seconds /readyz waits for the store (and Redis) before answering 503


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Says nothing about the store."""
    return web.json_response({"status": "ok"})


async def readiness(app: web.Application) -> dict[str, str]:
    """What readiness checks, each "ok" or why not: the store answers a query, the
    key and session caches are in step with it, and Redis answers when limited keys
    are refused without it (shared limits with ``redis.unavailable = deny``; with
    ``local`` they are counted in the process instead, so Redis is not checked).
    The store and Redis are asked at once, each within READY_TIMEOUT."""
    probes = [_store_check(app)]
    shared = app[AUTHORIZER].shared
    if shared is not None and not shared.fallback:
        probes.append(_redis_check(shared))
    checks = dict(await asyncio.gather(*probes))
    caches = (app[CACHE], app[SESSION_CACHE])
    checks["cache"] = "ok" if all(cache.fresh for cache in caches) else "stale"
    return checks


async def _store_check(app: web.Application) -> tuple[str, str]:
    try:  # keystile.flights.within: its deadline holds whatever the database does
        await within(app[STORE].ping(), READY_TIMEOUT)
    except (StoreError, TimeoutError):
        return "store", app[STORE].lost or "unreachable"
    return "store", "ok"


async def _redis_check(shared: SharedLimits) -> tuple[str, str]:
    try:
        await shared.ping()
    except LimitsUnavailable:
        return "redis", "unreachable"
    return "redis", "ok"


async def unready(app: web.Application) -> dict[str, str] | None:
    """Why the auth path cannot answer now (the checks that failed), or None."""
    failed = {name: why for name, why in (await readiness(app)).items() if why != "ok"}
    return failed or None


async def readyz(request: web.Request) -> web.Response:
    """Ready: every check of :func:`readiness` passed; the body lists them (and, when
    one failed, each failed one at the top level too)."""
    checks = await readiness(request.app)
    failed = {name: why for name, why in checks.items() if why != "ok"}
    if failed:
        return web.json_response({"status": "unavailable", **failed, "checks": checks},
                                 status=503)  # fmt: skip
    return web.json_response({"status": "ok", "checks": checks})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


SYNC_SPACING = 0.05  # seconds: the least time between two change-log reads


async def _sync_forever(caches: list[CachedLookup], interval: float) -> None:
    """Read the change log every ``interval``, or sooner when a cache asks (a key
    the hash filter has not seen, with the lookup trickle spent; a session ended)
    or the store says something changed (PostgreSQL's notifications; their
    listening connection lost: every cache starts over, since changes may have
    been missed meanwhile)."""
    wanted = asyncio.Event()
    for cache in caches:
        cache.wake = wanted.set

    def lost() -> None:
        for cache in caches:
            cache.clear()
        wanted.set()

    store = caches[0].lookup.store
    following = asyncio.create_task(store.follow(wanted.set, lost))
    try:
        await _read_the_log(caches, interval, wanted)
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following


SYNC_TIMEOUT = 2.0
"""Seconds one cache's change-log read may take before it is given up on: the
connection it waits on may be the one that went silent for good (a failover, a
NAT that forgot it), and no answer would ever come. The next read starts afresh,
allowed twice as long each time it is given up on again (up to SYNC_TIMEOUT_MAX:
a read that is merely slow, such as reloading a full hash filter, still ends)."""
SYNC_TIMEOUT_MAX = 60.0


async def _read_the_log(caches: list[CachedLookup], interval: float, wanted: asyncio.Event) -> None:
    failing = False
    patience = SYNC_TIMEOUT
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wanted.wait(), interval)
        wanted.clear()
        try:
            await _follow_the_file(caches)
            for cache in caches:  # keystile.flights.within: a read given up on is not waited for
                await within(cache.sync(), patience)
        except (StoreError, TimeoutError) as exc:
            why: Exception = exc
            if isinstance(exc, TimeoutError):
                why = StoreUnavailable(f"reading the change log: no answer within {patience:g} s")
                patience = min(patience * 2, SYNC_TIMEOUT_MAX)
            if not failing:
                log.error("store unreachable; cached keys expire after max_staleness: %s", why)
            failing = True
        else:
            patience = SYNC_TIMEOUT
            if failing:
                log.info("store reachable again")
            failing = False
        await asyncio.sleep(SYNC_SPACING)


async def _follow_the_file(caches: list[CachedLookup]) -> None:
    """Notice the store's file deleted or replaced (a restore from backup) under
    the running server: a replaced file is opened in place of the old one and the
    caches start over from it; a deleted one fails closed until a file is back."""
    store = caches[0].lookup.store
    changed = store.file_changed()
    if changed is None:
        return
    if changed == "replaced":
        log.error("the store file %s was replaced; reopening it, the cache starts over",
                  store.describe())  # fmt: skip
        await store.reopen()
        for cache in caches:
            cache.clear()
            await cache.start()
        log.info("store file %s reopened", store.describe())
    elif store.lost is None:
        log.error("the store file %s was deleted; every key is refused until it is back",
                  store.describe())  # fmt: skip
        await store.detach(f"the store file {store.describe()} was deleted")
        for cache in caches:
            cache.clear()
            cache.last_sync = float("-inf")  # fail closed now, not after max_staleness


async def _flush_forever(app: web.Application, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await app[USAGE].flush(app[STORE])
        except StoreError as exc:
            log.warning("usage flush failed, kept for the next one: %s", exc)
        now = time.time()
        app[AUTHORIZER].limiter.prune(now)
        ledger = app[AUTHORIZER].ledger
        if ledger is not None:  # unreported reservations given back
            await ledger.sweep(now)
        throttle = app[AUTHORIZER].invalid
        if throttle is not None:
            throttle.prune(now)
        app[DENIALS].tick()


def key_by_id(store: Store) -> Callable[[str], Awaitable[KeyRecord | None]]:
    """A key's record by id, remembered a minute (token reports for another
    worker's reservations name the key, not its hash)."""
    known: TTLCache[str, KeyRecord | None] = TTLCache(10_000, 60)

    async def find(key_id: str) -> KeyRecord | None:
        if key_id not in known:
            try:
                known[key_id] = await store.get_key(key_id)
            except NotFound:
                known[key_id] = None
        return known.get(key_id)

    return find


def make_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[USAGE] = UsageMeter()
    app[DENIALS] = logs.DenialLog()
    for adapter in ADAPTERS:
        app.router.add_route("*", adapter.path, aiohttp_handler(adapter))

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        store = await Store.open(settings.db)
        lookup = KeyLookup(
            store,
            settings.hasher(),
            settings.key_format,
            StaticKeys(settings.admin_key, settings.static_keys),
        )
        cache = CachedLookup(
            lookup,
            ttl=settings.cache_ttl,
            size=settings.cache_size,
            negative_ttl=settings.negative_ttl,
            negative_size=settings.negative_size,
            max_staleness=settings.max_staleness,
            observe_store=app[METRICS].store_seconds.observe,
        )
        await cache.start()
        sessions = CachedLookup(
            SessionLookup(store, settings.session_idle_timeout, settings.session_member_scopes),
            ttl=settings.cache_ttl,
            size=settings.cache_size,
            negative_ttl=settings.negative_ttl,
            negative_size=settings.negative_size,
            max_staleness=settings.max_staleness,
        )
        await sessions.start()
        app[STORE], app[CACHE], app[SESSION_CACHE] = store, cache, sessions
        app[METRICS].cache = cache
        rules = rules_of(settings)
        limit = settings.invalid_key_limit
        shared = None
        if settings.redis_url:  # connects on first use: a Redis down at start is no failure
            shared = connect(settings.redis_url, settings.redis_prefix,
                             fallback=settings.redis_unavailable == "local",
                             timeout=settings.redis_timeout)  # fmt: skip
        budgets = TokenBudgets(store.tokens_since, timeout=settings.reservation_timeout,
                               sink=app[USAGE].add_tokens, record_of=key_by_id(store))  # fmt: skip
        authorizer = app[AUTHORIZER] = Authorizer(
            rules, cache, invalid=InvalidKeyThrottle(limit) if limit else None, sessions=sessions,
            shared=shared, budgets=budgets,
        )  # fmt: skip
        if authorizer.shared_budgets is not None:
            await authorizer.shared_budgets.start()
        if not receivers(settings.usage_syslog_listen, settings.grpc_listen) and (
            await store.has_token_budgets()
        ):
            log.warning("Token budgets are set, but %s", NO_INTAKE)
        signing = SessionService(
            store,
            idle=settings.session_idle_timeout,
            absolute=settings.session_absolute_timeout,
            throttle=LoginThrottle(settings.login_attempts, settings.login_lockout),
        )
        signing.on_end.append(sessions.invalidate)  # a sign-out: at once in this process
        signing.on_change.append(sessions.sync)  # ended by id or user: the change log, now
        trusted = TrustedProxies(settings.trusted_proxies)
        app[PAGES][HOLDER]["current"] = SignIn(
            signing,
            sessions,
            trusted,
            settings.session_cookie,
            settings.session_cookie_secure,
            settings.return_hosts,
            settings.session_trusted_origins,
            settings.session_absolute_timeout,
            settings.oidc_name if settings.oidc_enabled else None,
            authorizer.admit,
        )
        denials = app[DENIALS]
        app[GATES] = {
            adapter.name: Gate(adapter, authorizer, app[METRICS], app[USAGE], trusted, denials)
            for adapter in ADAPTERS
        }
        keys = KeyService(
            store,
            lookup.hasher,
            settings.key_prefix,
            credentials=frozenset(settings.routes.credentials),
        )
        keys.on_change.append(cache.invalidate)  # same process: at once
        accounts = AccountService(keys)
        accounts.on_user_change.append(sessions.sync)
        app[ADMIN_APP][ADMIN_CONTEXT].context = AdminContext(
            keys, accounts, authorizer, trusted, app[USAGE], signing
        )
        http = single_sign_on(app, settings, accounts, signing)
        tasks = [
            asyncio.create_task(_sync_forever([cache, sessions], settings.poll_interval)),
            asyncio.create_task(_flush_forever(app, settings.usage_flush_interval)),
        ]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # requests in flight have finished by now: count every one of them
        try:
            flushed = await app[USAGE].flush(store)
            log.info("usage flushed at shutdown: %d requests", flushed)
        except StoreError as exc:
            log.error("usage lost at shutdown (%d requests): %s", app[USAGE].pending, exc)
        if http is not None:
            await http.close()
        if shared is not None:
            await shared.close()
        await store.close()

    app.cleanup_ctx.append(store_ctx)
    app[PAGES] = sign_in_app()
    oidc_pages.add_routes(app[PAGES])
    app[ADMIN_APP] = admin_app(settings.routes.credentials)
    signing, admin_ctx = app[PAGES][HOLDER], app[ADMIN_APP][ADMIN_CONTEXT]
    if settings.admin_listen is None:
        app[PAGES].add_subapp("/ui", ui_app(PAGES_PREFIX + "/ui", signing, admin_ctx))
        app.add_subapp(PREFIX, app[ADMIN_APP])
    else:
        # the UI goes where the admin API goes, with sign-in pages of its own there
        # (sharing the main listener's sessions: a cookie is per host, not per port)
        app[ADMIN_ROOT] = root = web.Application(client_max_size=64 * 1024)
        root.add_subapp(PREFIX, app[ADMIN_APP])
        pages = sign_in_app()
        pages[HOLDER] = signing
        oidc_pages.add_routes(pages)
        pages[oidc_pages.OIDC_HOLDER] = app[PAGES][oidc_pages.OIDC_HOLDER]  # one context
        root.add_subapp(PAGES_PREFIX, pages)
        root.add_subapp("/ui", ui_app("/ui", signing, admin_ctx))
    app.add_subapp(PAGES_PREFIX, app[PAGES])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def oidc_config(settings: Settings) -> OIDCConfig:
    """The provider as the settings describe it (sign-in on: all four are set)."""
    assert settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret
    return OIDCConfig(
        settings.oidc_issuer,
        settings.oidc_client_id,
        settings.oidc_client_secret,
        f"{settings.oidc_external_url}{oidc_pages.CALLBACK}",
        settings.oidc_scopes,
        settings.oidc_client_auth,
        settings.oidc_clock_skew,
        settings.oidc_timeout,
        settings.oidc_metadata_ttl,
    )


def single_sign_on(
    app: web.Application, settings: Settings, accounts: AccountService, signing: SessionService
) -> aiohttp.ClientSession | None:
    """The OpenID Connect pages' context; the HTTP client they use (None: OIDC is off)."""
    holder = app[PAGES][oidc_pages.OIDC_HOLDER]
    if not settings.oidc_enabled:
        if len(settings.oidc_missing) < 4:
            log.warning("OpenID Connect sign-in is off: %s not set",
                        ", ".join(settings.oidc_missing))  # fmt: skip
        holder["current"] = oidc_pages.OIDCPages(None, None, "", ())
        return None
    config = oidc_config(settings)
    http = aiohttp.ClientSession(headers={"User-Agent": "keystile"})
    policy = SSOPolicy(settings.oidc_email_domains, settings.oidc_groups_claim,
                       settings.oidc_admin_values, settings.oidc_group_map or ())  # fmt: skip
    sso = SingleSignOn(Provider(config, http), accounts, signing, policy)
    keys = None
    if settings.sso_key_limit > 0:
        keys = SelfServiceKeys(accounts, KeyPolicy(settings.sso_key_name,
                               settings.sso_key_expires_in, settings.sso_key_scopes,
                               settings.sso_key_limit))  # fmt: skip
    holder["current"] = oidc_pages.OIDCPages(
        sso, keys, config.issuer, tuple(sorted(settings.oidc_email_domains))
    )
    log.info("OpenID Connect sign-in with %s (%s)", settings.oidc_name, settings.oidc_issuer)
    return http


async def _serve(
    settings: Settings, worker: int | None = None, metrics_dir: Path | None = None
) -> None:
    """Serve until SIGINT/SIGTERM. ``worker``: one of several processes sharing the
    ports, whose /metrics sums theirs through the files in ``metrics_dir``."""
    app = make_app(settings)
    shared = None if metrics_dir is None else WorkerMetrics(metrics_dir, app[METRICS])
    runners = [web.AppRunner(app, access_log=None)]
    await runners[0].setup()  # opens the store; the gates and the admin context exist now
    fallback = runners[0].server
    assert fallback is not None
    listener = AuthListener(app[GATES].values(), fallback, app[METRICS])
    reuse_port = worker is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    servers: list[asyncio.Server] = []
    closing: list[AuthListener | GrpcListener | SyslogListener] = [listener]
    tending = asyncio.create_task(heap.tend_forever())
    publishing = None if shared is None else asyncio.create_task(shared.publish_forever())
    try:
        servers.append(await _listen(settings.listen, "listen", loop.create_server(
            listener, *settings.listen, reuse_port=reuse_port, backlog=1024)))  # fmt: skip
        if settings.admin_listen is not None:
            runners.append(web.AppRunner(app[ADMIN_ROOT], access_log=None))
            await runners[1].setup()
            assert runners[1].server is not None
            # no auth endpoints here: the listener only screens each head before
            # aiohttp sees it (a control byte would be logged and echoed there)
            admin = AuthListener((), runners[1].server, None)
            closing.append(admin)
            servers.append(await _listen(settings.admin_listen, "admin_listen", loop.create_server(
                admin, *settings.admin_listen, reuse_port=reuse_port)))  # fmt: skip
        if settings.grpc_listen is not None:
            grpc = make_grpc_listener(app, reuse_port)
            closing.append(grpc)
            await grpc.start(settings.grpc_listen)
        if settings.usage_syslog_listen is not None:  # nginx's usage lines
            syslog = SyslogListener(usage_report(app))
            closing.append(syslog)
            await syslog.start(settings.usage_syslog_listen, reuse_port)
        who = "" if worker is None else f"worker {worker}: "
        log.info("%slistening on http://%s:%d, store %s", who, *settings.listen,
                 redact(str(settings.db)))  # fmt: skip
        if settings.admin_listen is not None:
            log.info("%sadmin API on http://%s:%d%s, web UI on /ui/", who,
                     *settings.admin_listen, PREFIX)  # fmt: skip
        if settings.grpc_listen is not None:
            log.info("%sext_authz gRPC on %s:%d", who, *settings.grpc_listen)
        if settings.usage_syslog_listen is not None:
            log.info("%susage lines (syslog) on udp %s:%d", who, *settings.usage_syslog_listen)
        await stop.wait()
    finally:
        tending.cancel()
        if publishing is not None:
            publishing.cancel()
        for server in servers:
            server.close()
        # all at once: none takes a new request while another drains
        await asyncio.gather(*(each.close(SHUTDOWN_GRACE) for each in closing))
        for runner in reversed(runners):
            await runner.cleanup()
        if shared is not None:  # requests in flight have finished: count every one
            shared.publish()


def usage_report(app: web.Application) -> Report:
    """What the usage intake calls: the token budgets' report, now."""

    async def report(reservation: str, tokens: int) -> bool:
        ledger = app[AUTHORIZER].ledger
        return False if ledger is None else await ledger.report(reservation, tokens, time.time())

    return report


def make_grpc_listener(app: web.Application, reuse_port: bool) -> GrpcListener:
    """The gRPC listener on the same path as the HTTP dialects (grpcio imported here)."""
    from keystile.serve.adapters import envoy_grpc
    from keystile.serve.grpc_listener import CheckService, GrpcListener, peer_address
    from keystile.serve.intake.accesslog import AccessLogService

    settings, authorizer = app[SETTINGS], app[AUTHORIZER]
    judge = Judge(envoy_grpc.NAME, authorizer, app[METRICS], app[USAGE], app[DENIALS])
    service = CheckService(judge, TrustedProxies(settings.trusted_proxies))

    async def ready() -> bool:
        return await unready(app) is None

    listener = GrpcListener(service, ready, reuse_port)
    # Envoy's usage (the access-log service), on the same port as its checks
    usage = AccessLogService(usage_report(app), service.trusted, peer_address,
                             settings.usage_tokens_header)  # fmt: skip
    usage.add_to(listener.server)
    listener.companions.append(usage)
    return listener


async def _listen(address: tuple[str, int], setting: str, bind: Awaitable[T]) -> T:
    try:
        return await bind
    except OSError as exc:
        host, port = address
        why = ports.why_taken(host, port) or exc.strerror or exc  # uvloop's says it twice
        raise ConfigError(f"{setting} {host}:{port}: {why}") from None


def run_worker(
    settings: Settings, worker: int | None = None, metrics_dir: Path | None = None
) -> None:
    """One event loop serving until SIGINT/SIGTERM, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        asyncio.run(_serve(settings, worker, metrics_dir))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(settings, worker, metrics_dir))


def serve(settings: Settings) -> int:
    """Run the server (``settings.workers`` processes) until SIGINT/SIGTERM; the exit code."""
    logs.setup()
    # once, from the process that starts: how far N processes may overshoot each limit
    per_process = settings.redis_url is None and settings.workers > 1
    log.log(logging.WARNING if per_process else logging.INFO, "%s", sharing(settings))
    if settings.workers == 1:
        run_worker(settings)
        return 0
    return supervise(settings, run_worker)
