"""/readyz says what it checks: the store, the caches, and Redis when limited keys
are refused without it (``redis.unavailable = deny``). A Redis that is down is then
a 503, no longer a 200 beside 503s for every limited key."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from keystile import config
from keystile.core.keys import Hasher
from keystile.manage.service import KeyService
from keystile.server import READY_TIMEOUT, STORE, make_app
from keystile.store import Store

from .redis_server import closed_port, delete_prefix, redis_url, unique_prefix

MARGIN = 0.5  # seconds a busy machine may add to READY_TIMEOUT


@pytest.fixture
async def limited_key(db_path: Path) -> str:
    """A stored key with scope ``chat`` and a rate limit (asks Redis when configured)."""
    async with await Store.open(db_path) as store:
        issued = await KeyService(store, Hasher()).create(
            "hot", scopes=["chat"], limits={"per_minute": 1000}
        )
        return issued.key


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    url, chosen = redis_url(), unique_prefix()  # skips (fails in CI) without Redis
    yield chosen
    await delete_prefix(url, chosen)


async def served(aiohttp_client: AiohttpClient, settings: config.Settings,
                 **changes: Any) -> TestClient[Any, Any]:  # fmt: skip
    return await aiohttp_client(make_app(dataclasses.replace(settings, **changes)))


async def ready(client: TestClient[Any, Any]) -> tuple[int, dict[str, Any], float]:
    """/readyz's status, body, and how long it took."""
    started = time.monotonic()
    reply = await client.get("/readyz")
    return reply.status, await reply.json(), time.monotonic() - started


async def auth(client: TestClient[Any, Any], key: str) -> tuple[int, str]:
    reply = await client.get("/auth/nginx", headers={"X-Original-URI": "/v1/chat/completions",
                                                     "Authorization": f"Bearer {key}"})  # fmt: skip
    return reply.status, reply.headers.get("X-Keystile-Detail", "")


async def test_without_redis_the_store_and_the_caches_are_checked(
    aiohttp_client: AiohttpClient, settings: config.Settings
) -> None:
    status, body, _ = await ready(await served(aiohttp_client, settings))
    assert (status, body) == (200, {"status": "ok", "checks": {"store": "ok", "cache": "ok"}})


async def test_a_store_that_is_gone_is_named(
    aiohttp_client: AiohttpClient, settings: config.Settings
) -> None:
    client = await served(aiohttp_client, settings)
    await client.app[STORE].close()
    status, body, _ = await ready(client)
    assert status == 503
    assert body == {"status": "unavailable", "store": "unreachable",
                    "checks": {"store": "unreachable", "cache": "ok"}}  # fmt: skip


async def test_redis_is_checked_when_limited_keys_need_it(
    aiohttp_client: AiohttpClient, settings: config.Settings, limited_key: str, prefix: str
) -> None:
    client = await served(aiohttp_client, settings, redis_url=redis_url(), redis_prefix=prefix)
    status, body, _ = await ready(client)
    checks = {"store": "ok", "redis": "ok", "cache": "ok"}
    assert (status, body) == (200, {"status": "ok", "checks": checks})
    assert await auth(client, limited_key) == (200, "")


async def test_a_redis_that_is_down_fails_readiness_with_deny(
    aiohttp_client: AiohttpClient, settings: config.Settings, key: str, limited_key: str
) -> None:
    down = f"redis://127.0.0.1:{closed_port()}/0"
    client = await served(aiohttp_client, settings, redis_url=down)
    status, body, took = await ready(client)
    assert status == 503 and took < READY_TIMEOUT + MARGIN
    assert body == {"status": "unavailable", "redis": "unreachable",
                    "checks": {"store": "ok", "redis": "unreachable", "cache": "ok"}}  # fmt: skip
    # what readiness stands for: limited keys are refused, keys without limits are not
    assert await auth(client, limited_key) == (503, "limits_unavailable")
    assert (await auth(client, key))[0] == 200


async def test_with_local_fallback_a_redis_that_is_down_is_not_checked(
    aiohttp_client: AiohttpClient, settings: config.Settings, limited_key: str
) -> None:
    down = f"redis://127.0.0.1:{closed_port()}/0"
    client = await served(aiohttp_client, settings, redis_url=down, redis_unavailable="local")
    status, body, _ = await ready(client)
    assert (status, body) == (200, {"status": "ok", "checks": {"store": "ok", "cache": "ok"}})
    assert await auth(client, limited_key) == (200, "")  # counted in this process meanwhile


async def test_a_silent_store_and_a_silent_redis_are_waited_for_at_once(
    aiohttp_client: AiohttpClient, settings: config.Settings
) -> None:
    """Both silent: /readyz still answers within READY_TIMEOUT (not the sum of the
    store's and Redis's waits), naming both."""
    held: list[asyncio.StreamWriter] = []  # connections accepted and never answered

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    client = await served(aiohttp_client, settings, redis_url=f"redis://127.0.0.1:{port}/0")

    async def never() -> None:  # a store whose query is never answered
        await asyncio.Event().wait()

    client.app[STORE].ping = never  # type: ignore[method-assign]
    try:
        status, body, took = await ready(client)
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert status == 503 and READY_TIMEOUT <= took < READY_TIMEOUT + MARGIN
    assert body["checks"] == {"store": "unreachable", "redis": "unreachable", "cache": "ok"}
