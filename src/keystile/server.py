"""The app factory and its wiring: settings in, listening sockets out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from aiohttp import web

from keystile import heap, logs
from keystile.accounts import AccountService
from keystile.adapters import ADAPTERS
from keystile.admin import PREFIX, admin_app
from keystile.admin.context import ADMIN_CONTEXT, AdminContext
from keystile.cache import CachedLookup
from keystile.clientip import TrustedProxies
from keystile.config import Settings
from keystile.decide import Decider
from keystile.errors import ConfigError, StoreError
from keystile.gate import GATES, Gate, aiohttp_handler
from keystile.lookup import KeyLookup
from keystile.metrics import CONTENT_TYPE, Metrics
from keystile.service import KeyService
from keystile.static_keys import StaticKeys
from keystile.store import Store
from keystile.usage import UsageMeter
from keystile.wire import AuthListener
from keystile.workers import supervise

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CACHE = web.AppKey("cache", CachedLookup)
METRICS = web.AppKey("metrics", Metrics)
DECIDER = web.AppKey("decider", Decider)
ADMIN_APP = web.AppKey("admin_app", web.Application)
USAGE = web.AppKey("usage", UsageMeter)
DENIALS = web.AppKey("denials", logs.DenialLog)

log = logging.getLogger("keystile.server")
T = TypeVar("T")
SHUTDOWN_GRACE = 5.0  # seconds requests in flight get to finish


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
        app[DENIALS].tick()


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
        app[STORE], app[CACHE] = store, cache
        app[METRICS].cache = cache
        app[DECIDER] = Decider(cache, settings.routes, settings.credential_headers)
        trusted, denials = TrustedProxies(settings.trusted_proxies), app[DENIALS]
        app[GATES] = {
            adapter.name: Gate(adapter, app[DECIDER], app[METRICS], app[USAGE], trusted, denials)
            for adapter in ADAPTERS
        }
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


async def _serve(settings: Settings, worker: int | None = None) -> None:
    """Serve until SIGINT/SIGTERM. ``worker``: one of several processes sharing the ports."""
    app = make_app(settings)
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
    main: asyncio.Server | None = None
    tending = asyncio.create_task(heap.tend_forever())
    try:
        main = await _listen(settings.listen, "listen",
                             loop.create_server(listener, *settings.listen, reuse_port=reuse_port,
                                                backlog=1024))  # fmt: skip
        if settings.admin_listen is not None:
            runners.append(web.AppRunner(app[ADMIN_APP], access_log=None))
            await runners[1].setup()
            site = web.TCPSite(runners[1], *settings.admin_listen, reuse_port=reuse_port)
            await _listen(settings.admin_listen, "admin_listen", site.start())
        who = "" if worker is None else f"worker {worker}: "
        log.info("%slistening on http://%s:%d, store %s", who, *settings.listen, settings.db)
        if settings.admin_listen is not None:
            log.info("%sadmin API on http://%s:%d%s", who, *settings.admin_listen, PREFIX)
        await stop.wait()
    finally:
        tending.cancel()
        if main is not None:
            main.close()
        await listener.close(SHUTDOWN_GRACE)
        for runner in reversed(runners):
            await runner.cleanup()


async def _listen(address: tuple[str, int], setting: str, bind: Awaitable[T]) -> T:
    try:
        return await bind
    except OSError as exc:
        host, port = address
        raise ConfigError(f"{setting} {host}:{port}: {exc.strerror or exc}") from None


def run_worker(settings: Settings, worker: int | None = None) -> None:
    """One event loop serving until SIGINT/SIGTERM, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        asyncio.run(_serve(settings, worker))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(settings, worker))


def serve(settings: Settings) -> int:
    """Run the server (``settings.workers`` processes) until SIGINT/SIGTERM; the exit code."""
    logs.setup()
    if settings.workers == 1:
        run_worker(settings)
        return 0
    return supervise(settings, run_worker)
