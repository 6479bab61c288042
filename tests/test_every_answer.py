"""Every auth request gets exactly one answer, whatever a shared store read does.

Fifty concurrent first requests of a key with a quota share one read of the
quota's stored usage (keystile.flights). That read is made slow (past the
read's deadline), failing, or cancelled under its waiters; each of the fifty
must still be answered, within the deadline plus a margin, and counted in the
metrics: through the main listener (the fast path nginx talks to) and the gRPC
listener (Envoy's ext_authz)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2

from keystile import config
from keystile.core.errors import StoreUnavailable
from keystile.core.keys import Hasher
from keystile.manage.service import KeyService
from keystile.serve.adapters import envoy_grpc
from keystile.serve.gate import GATES, QUOTA_READ_TIMEOUT
from keystile.serve.wire import AuthListener
from keystile.server import AUTHORIZER, METRICS, make_app, make_grpc_listener
from keystile.store import Store
from tests.e2e.harness import free_port

from .test_wire import auth, exchange, status

CONCURRENT = 50
MARGIN = 0.25  # seconds past the deadline: 50 requests answered by one process on 2 busy cores
CHECK = "/envoy.service.auth.v3.Authorization/Check"


@pytest.fixture
async def quota_key(db_path: Path) -> str:
    async with await Store.open(db_path) as store:
        made = await KeyService(store, Hasher()).create(
            "q", scopes=["chat"], limits={"quota_day": 1000}
        )
        return made.key


async def slow(kind: str, owner: str, since: float) -> int:
    await asyncio.sleep(QUOTA_READ_TIMEOUT * 4)  # the peer answers, but too late
    return 0


async def failing(kind: str, owner: str, since: float) -> int:
    await asyncio.sleep(0.05)
    raise StoreUnavailable("the store went away")


async def cancelled(kind: str, owner: str, since: float) -> int:
    await asyncio.sleep(0.05)
    task = asyncio.current_task()
    assert task is not None  # the shared read is a task of its own
    task.cancel()  # as a shutdown or a pool reset would
    await asyncio.sleep(1)
    return 0


READS: dict[str, Callable[[str, str, float], Awaitable[int]]] = {
    "slow": slow, "failing": failing, "cancelled": cancelled,
}  # fmt: skip


@dataclass
class Served:
    app: web.Application
    http_port: int
    grpc_port: int

    def decisions(self, adapter: str) -> int:
        return sum(n for key, n in self.app[METRICS].decisions.items() if key[0] == adapter)


@pytest.fixture(params=sorted(READS))
async def served(
    request: pytest.FixtureRequest, settings: config.Settings
) -> AsyncIterator[Served]:
    app = make_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    app[AUTHORIZER].quotas.store.allowed_since = READS[request.param]  # type: ignore[method-assign]
    listener = AuthListener(app[GATES].values(), runner.server, app[METRICS], idle_timeout=5)
    server = await asyncio.get_running_loop().create_server(listener, "127.0.0.1", 0)
    grpc_listener = make_grpc_listener(app, reuse_port=False)
    grpc_port = free_port()
    await grpc_listener.start(("127.0.0.1", grpc_port))
    yield Served(app, server.sockets[0].getsockname()[1], grpc_port)
    await grpc_listener.close(1.0)
    server.close()
    await listener.close(1.0)
    await runner.cleanup()


async def timed(ask: Awaitable[int]) -> tuple[int, float]:
    started = time.perf_counter()
    answer = await ask
    return answer, time.perf_counter() - started


async def over_http(port: int, key: str) -> int:
    (reply,) = await exchange(port, auth(key))
    return status(reply)


async def over_grpc(channel: grpc.aio.Channel, key: str) -> int:
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "POST", "/v1/chat/completions", "api"
    http.headers["x-api-key"] = key
    call = channel.unary_unary(CHECK, request_serializer=CheckRequest.SerializeToString,
                               response_deserializer=CheckResponse.FromString)  # fmt: skip
    response: CheckResponse = await call(request, timeout=5)
    if response.status.code == code_pb2.OK:
        return 200
    return int(response.denied_response.status.code)


def assert_all_answered(results: list[tuple[int, float]]) -> None:
    assert len(results) == CONCURRENT
    assert {code for code, _ in results} == {503}, results  # fail closed, never an allow
    slowest = max(seconds for _, seconds in results)
    assert slowest <= QUOTA_READ_TIMEOUT + MARGIN, f"slowest answer {slowest:.3f} s"


async def test_fifty_first_requests_over_the_main_listener(served: Served, quota_key: str) -> None:
    before = served.decisions("nginx")
    results = await asyncio.gather(
        *(timed(over_http(served.http_port, quota_key)) for _ in range(CONCURRENT))
    )
    assert_all_answered(results)
    assert served.decisions("nginx") - before == CONCURRENT


async def test_fifty_first_requests_over_grpc(served: Served, quota_key: str) -> None:
    before = served.decisions(envoy_grpc.NAME)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        await channel.channel_ready()
        results = await asyncio.gather(
            *(timed(over_grpc(channel, quota_key)) for _ in range(CONCURRENT))
        )
    assert_all_answered(results)
    assert served.decisions(envoy_grpc.NAME) - before == CONCURRENT
