"""The app factory and its wiring: settings in, an aiohttp application out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from keystile.config import Settings
from keystile.errors import StoreError
from keystile.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Says nothing about the store."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: the key store answers a query."""
    try:
        await request.app[STORE].ping()
    except StoreError:
        return web.json_response({"status": "unavailable", "store": "unreachable"}, status=503)
    return web.json_response({"status": "ok"})


def make_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        app[STORE] = await Store.open(settings.db)
        yield
        await app[STORE].close()

    app.cleanup_ctx.append(store_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def serve(settings: Settings) -> None:
    """Run the server until SIGINT/SIGTERM, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    host, port = settings.listen
    web.run_app(
        make_app(settings), host=host, port=port, access_log=None, print=None,
        loop=loop_factory() if loop_factory else None,
    )  # fmt: skip
