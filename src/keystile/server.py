"""The app factory and its wiring: settings in, an aiohttp application out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from keystile import logs
from keystile.accounts import AccountService
from keystile.adapters import ADAPTERS, Adapter
from keystile.admin import PREFIX, admin_app
from keystile.admin.context import ADMIN_CONTEXT, AdminContext
from keystile.cache import CachedLookup
from keystile.clientip import TrustedProxies
from keystile.config import Settings
from keystile.decide import Decider
from keystile.errors import StoreError
from keystile.lookup import KeyLookup
from keystile.metrics import CONTENT_TYPE, Metrics
from keystile.service import KeyService
from keystile.static_keys import StaticKeys
from keystile.store import Store
from keystile.usage import UsageMeter

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CACHE = web.AppKey("cache", CachedLookup)
METRICS = web.AppKey("metrics", Metrics)
DECIDER = web.AppKey("decider", Decider)
ADMIN_APP = web.AppKey("admin_app", web.Application)
USAGE = web.AppKey("usage", UsageMeter)

log = logging.getLogger("keystile.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Says nothing about the store."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: the key store answers a query and the cache is in step with it."""
    try:
        await request.app[STORE].ping()
    except StoreError:
        return web.json_response({"status": "unavailable", "store": "unreachable"}, status=503)
    if not request.app[CACHE].fresh:
        return web.json_response({"status": "unavailable", "cache": "stale"}, status=503)
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def auth_handler(
    adapter: Adapter, metrics: Metrics, usage: UsageMeter, trusted: TrustedProxies
) -> Handler:
    """The request path: facts, decision, rendering; counters in memory only."""
    parse, render = adapter.facts, adapter.render
    observe = metrics.decision_observer(adapter.name)
    count = usage.record
    perf_counter, wall = time.perf_counter, time.time

    async def handle(request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        facts = parse(request, trusted)
        decision = await request.app[DECIDER].decide(facts)
        response = render(decision)
        observe(decision, perf_counter() - started)
        count(decision, wall())
        if decision.reason is not None:
            logs.log_denial(facts, decision)
        return response

    return handle


async def _sync_forever(cache: CachedLookup, interval: float) -> None:
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            await cache.sync()
        except StoreError as exc:
            if not failing:
                log.error("store unreachable; cached keys expire after max_staleness: %s", exc)
            failing = True
        else:
            if failing:
                log.info("store reachable again")
            failing = False


async def _flush_forever(app: web.Application, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await app[USAGE].flush(app[STORE])
        except StoreError as exc:
            log.warning("usage flush failed, kept for the next one: %s", exc)
        app[DECIDER].limiter.prune(time.time())


def make_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[USAGE] = UsageMeter()
    trusted = TrustedProxies(settings.trusted_proxies)
    for adapter in ADAPTERS:
        handler = auth_handler(adapter, app[METRICS], app[USAGE], trusted)
        app.router.add_route("*", adapter.path, handler)

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
        app[STORE], app[CACHE] = store, cache
        app[METRICS].cache = cache
        app[DECIDER] = Decider(cache, settings.routes, settings.credential_headers)
        keys = KeyService(store, lookup.hasher, settings.key_prefix)
        keys.on_change.append(cache.invalidate)  # same process: at once
        app[ADMIN_APP][ADMIN_CONTEXT].context = AdminContext(
            keys, AccountService(keys), cache, settings.routes, settings.credential_headers,
            app[DECIDER], app[USAGE],
        )  # fmt: skip
        tasks = [
            asyncio.create_task(_sync_forever(cache, settings.poll_interval)),
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
        await store.close()

    app.cleanup_ctx.append(store_ctx)
    app[ADMIN_APP] = admin_app()
    if settings.admin_listen is None:
        app.add_subapp(PREFIX, app[ADMIN_APP])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def _serve(settings: Settings) -> None:
    app = make_app(settings)
    runners = [web.AppRunner(app, access_log=None)]
    await runners[0].setup()  # opens the store; the admin app gets its context here
    sites = [web.TCPSite(runners[0], *settings.listen)]
    if settings.admin_listen is not None:
        runners.append(web.AppRunner(app[ADMIN_APP], access_log=None))
        await runners[1].setup()
        sites.append(web.TCPSite(runners[1], *settings.admin_listen))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for site in sites:
            await site.start()
        host, port = settings.listen
        log.info("listening on http://%s:%d, store %s", host, port, settings.db)
        if settings.admin_listen is not None:
            log.info("admin API on http://%s:%d%s", *settings.admin_listen, PREFIX)
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def serve(settings: Settings) -> None:
    """Run the server until SIGINT/SIGTERM, on uvloop when it is installed."""
    logs.setup()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        asyncio.run(_serve(settings))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(settings))
