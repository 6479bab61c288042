"""The app factory and its wiring: settings in, an aiohttp application out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from keystile import logs
from keystile.adapters import ADAPTERS, Adapter
from keystile.cache import CachedLookup
from keystile.clientip import TrustedProxies
from keystile.config import Settings
from keystile.decide import Decider
from keystile.errors import StoreError
from keystile.lookup import KeyLookup
from keystile.metrics import CONTENT_TYPE, Metrics
from keystile.static_keys import StaticKeys
from keystile.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CACHE = web.AppKey("cache", CachedLookup)
METRICS = web.AppKey("metrics", Metrics)
DECIDER = web.AppKey("decider", Decider)

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


def auth_handler(adapter: Adapter, metrics: Metrics, trusted: TrustedProxies) -> Handler:
    """The request path: facts, decision, rendering, one counter and one histogram."""
    parse, render = adapter.facts, adapter.render
    observe = metrics.decision_observer(adapter.name)
    perf_counter = time.perf_counter

    async def handle(request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        facts = parse(request, trusted)
        decision = await request.app[DECIDER].decide(facts)
        response = render(decision)
        observe(decision, perf_counter() - started)
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


def make_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    trusted = TrustedProxies(settings.trusted_proxies)
    for adapter in ADAPTERS:
        app.router.add_route("*", adapter.path, auth_handler(adapter, app[METRICS], trusted))

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
        syncing = asyncio.create_task(_sync_forever(cache, settings.poll_interval))
        yield
        syncing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await syncing
        await store.close()

    app.cleanup_ctx.append(store_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def serve(settings: Settings) -> None:
    """Run the server until SIGINT/SIGTERM, on uvloop when it is installed."""
    logs.setup()
    host, port = settings.listen
    loop = None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        pass
    else:
        loop = uvloop.new_event_loop()
    log.info("listening on http://%s:%d, store %s", host, port, settings.db)
    web.run_app(make_app(settings), host=host, port=port, access_log=None, print=None, loop=loop)
