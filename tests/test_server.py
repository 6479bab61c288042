"""The app as aiohttp serves it: endpoints, metrics, hostile input, fail closed."""

from __future__ import annotations

import asyncio
import dataclasses

import orjson
import pytest
from aiohttp.test_utils import TestClient

from keystile import config
from keystile.server import CACHE, STORE, make_app

from .conftest import UPSTREAM_SECRET


@pytest.fixture
async def client(aiohttp_client, settings: config.Settings, key: str) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(make_app(settings))


def nginx_headers(key: str | None, uri: str = "/v1/chat/completions") -> dict[str, str]:
    headers = {"X-Original-URI": uri, "X-Original-Method": "POST"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


async def test_health_and_ready(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["status"] == "ok"


async def test_ready_fails_when_the_store_is_gone(client: TestClient, key: str) -> None:
    await client.app[STORE].close()
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200
    # nothing is allowed: the cache has not been filled, the store cannot answer
    reply = await client.get("/auth/nginx", headers=nginx_headers(key))
    assert reply.status == 503


async def test_allow_and_deny(client: TestClient, key: str) -> None:
    allowed = await client.get("/auth/nginx", headers=nginx_headers(key))
    assert allowed.status == 200
    assert allowed.headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert allowed.headers["X-Keystile-Route"] == "chat"
    denied = await client.get("/auth/nginx", headers=nginx_headers(None))
    assert denied.status == 401
    assert denied.headers["X-Keystile-Reason"] == "missing_api_key"
    body = orjson.loads(await denied.read())
    assert body["error"]["code"] == "missing_api_key"
    assert UPSTREAM_SECRET not in str(denied.headers) and "X-Keystile-Key-Id" not in denied.headers


async def test_envoy_and_forward_endpoints(client: TestClient, key: str) -> None:
    envoy = await client.post("/auth/envoy/v1/chat/completions?x=1",
                              headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert envoy.status == 200 and envoy.headers["X-Keystile-Route"] == "chat"
    assert "x-api-key" in envoy.headers["x-envoy-auth-headers-to-remove"]
    forwarded = {"X-Forwarded-Uri": "/v1/chat/completions", "X-Forwarded-Method": "POST"}
    forward = await client.get("/auth/forward", headers={**forwarded, "x-api-key": key})
    assert forward.status == 200 and forward.headers["X-Api-Key"] == ""
    denied = await client.get("/auth/envoy/v1/chat/completions")
    assert denied.status == 401
    assert (await denied.json())["error"]["code"] == "missing_api_key"


async def test_untrusted_peer_cannot_choose_the_uri(
    aiohttp_client,
    settings: config.Settings,
    key: str,  # type: ignore[no-untyped-def]
) -> None:
    client = await aiohttp_client(make_app(dataclasses.replace(settings, trusted_proxies=())))
    reply = await client.get("/auth/nginx", headers=nginx_headers(key))
    assert reply.status == 403
    assert reply.headers["X-Keystile-Reason"] == "route_not_allowed"


async def test_metrics_count_decisions_without_key_labels(client: TestClient, key: str) -> None:
    await client.get("/auth/nginx", headers=nginx_headers(key))
    await client.get("/auth/nginx", headers=nginx_headers("ks_bogus"))
    text = (await (await client.get("/metrics")).read()).decode()
    assert ('keystile_decisions_total{adapter="nginx",detail="",outcome="allow",'
            'reason=""} 1.0') in text  # fmt: skip
    assert ('keystile_decisions_total{adapter="nginx",detail="unknown_key",'
            'outcome="unauthenticated",reason="invalid_api_key"} 1.0') in text  # fmt: skip
    assert "keystile_decision_seconds_bucket" in text
    assert 'keystile_cache_lookups_total{result="miss"} 1.0' in text
    assert "key_" not in text and key not in text


HOSTILE = [
    {"Authorization": "Bearer " + "A" * 6000},
    {"Authorization": "Bearer ks_\u00e9\u00e9\u00e9".encode().decode("latin-1")},
    {"X-Original-URI": "/v1/chat/\u00ff\u00fe"},
    {"X-Original-URI": ""},
    {"X-Original-URI": "*"},
    {"X-Original-URI": "/v1/chat/" + "%" * 3000},
    {"X-Original-Method": "\u00e9"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer ks_x Bearer ks_y"},
]


@pytest.mark.parametrize("extra", HOSTILE)
async def test_hostile_input_is_denied_never_500(client: TestClient, extra: dict[str, str]) -> None:
    headers = {**nginx_headers(None), **extra}
    reply = await client.get("/auth/nginx", headers=headers)
    assert reply.status in (400, 401, 403), (extra, reply.status)


RAW_HOSTILE = [
    b"x-api-key: \x7f\x01\x02\r\n",
    b"x-api-key: ks_\xff\xfe\xfd\r\n",
    b"X-Original-URI: /v1/chat/\x00\r\n",
    b"X-Original-URI: /v1/chat/\xc3\x28\r\n",
    b"Authorization: Bearer \x00" + b"a" * 100 + b"\r\n",
]


@pytest.mark.parametrize("line", RAW_HOSTILE)
async def test_raw_hostile_bytes_are_denied_never_500(client: TestClient, line: bytes) -> None:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"GET /auth/nginx HTTP/1.1\r\nHost: x\r\nX-Original-URI: /v1/chat/x\r\n"
                 + line + b"Connection: close\r\n\r\n")  # fmt: skip
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    status = int(status_line.split()[1])
    assert status in (400, 401, 403), (line, status_line)


async def test_cache_is_started_with_the_app(client: TestClient) -> None:
    assert client.app[CACHE].fresh
