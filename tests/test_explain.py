"""``explain`` is the auth path: for any request, explain's reason code and detail
are the ones the nginx adapter answers. Hypothesis generates the requests
(methods in any case, paths with encodings and dot segments, method overrides,
credential copies, imitated headers, client addresses) against keys with scopes,
an IP allowlist, a rate limit, a quota and a token budget; explain is asked first
(it counts nothing), then the real path answers (and counts)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from keystile import config
from keystile.core.keys import Hasher
from keystile.core.model import KeyRecord
from keystile.manage.explain import explain
from keystile.manage.service import KeyService
from keystile.serve.adapters.base import Inbound
from keystile.serve.gate import GATES, Gate
from keystile.server import AUTHORIZER, make_app
from keystile.store import Store

CONFIG = """
[usage]
token_estimate = 1

[[routes]]
name = "chat"
path = "/v1/chat/*"
methods = ["GET", "POST"]
scopes = ["chat"]

[[routes]]
name = "admin"
path = "/admin/*"
scopes = ["admin"]

[[routes]]
name = "models"
path = "/v1/models"
"""
KEYS = {  # name -> what KeyService.create gets
    "chat": {"scopes": ["chat"]},
    "memory": {"scopes": ["memory"]},
    "office": {"scopes": ["chat"], "allowed_ips": ["10.0.0.0/8"]},
    "rate": {"scopes": ["chat"], "limits": {"per_hour": 4}},
    "quota": {"scopes": ["chat"], "limits": {"quota_day": 3}},
    "budget": {"scopes": ["chat"], "limits": {"tokens_per_day": 5}},
}

SEGMENTS = ["v1", "chat", "completions", "admin", "models", "x", "..", ".", "%2e%2e", "%2F",
            "%2f", "a%00b", "%252e", "a;b", "é", "%C3%A9", "", "~u", "a#b", "*"]  # fmt: skip
METHODS = ["GET", "POST", "get", "pOsT", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "FOO",
           "TRACE", "CONNECT"]  # fmt: skip
QUERIES = ["", "?a=1", "?_method=DELETE", "?_method=GET", "?api_key=abc", "?x=%00",
           "?access_token=t", "?_method=BREW"]  # fmt: skip
EXTRA_HEADERS = [
    ("X-HTTP-Method-Override", "DELETE"), ("X-HTTP-Method-Override", "GET"),
    ("X-Method-Override", "PUT"), ("X-HTTP-Method", "BREW"), ("X_Keystile_Owner", "eve"),
    ("X-Keystile-Owner", "eve"), ("X-Api-Key", "ks_other_key_0000"), ("Cookie", "a=b"),
    ("Accept", "text/html"), ("Sec-Fetch-Mode", "navigate"), ("X-Request-Id", "r1"),
]  # fmt: skip
CLIENTS = ["192.0.2.1", "10.1.2.3", "2001:db8::1"]


@dataclass
class World:
    runner: asyncio.Runner
    gate: Gate
    app: web.Application
    keys: dict[str, tuple[str, KeyRecord]]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    toml = tmp_path / "keystile.toml"
    toml.write_text(CONFIG)
    db = tmp_path / "k.db"
    loaded = config.load({"KEYSTILE_DB": str(db), "KEYSTILE_CONFIG": str(toml),
                          "XDG_DATA_HOME": str(tmp_path)})  # fmt: skip
    with asyncio.Runner() as runner:

        async def start() -> tuple[web.AppRunner, dict[str, tuple[str, KeyRecord]]]:
            async with await Store.open(db) as store:
                service = KeyService(store, Hasher())
                made = {name: await service.create(name, **spec) for name, spec in KEYS.items()}
                keys = {name: (m.key, await store.get_key(m.record.id)) for name, m in made.items()}
            app_runner = web.AppRunner(make_app(loaded), access_log=None)
            await app_runner.setup()
            return app_runner, keys

        app_runner, keys = runner.run(start())
        app = app_runner.app
        try:
            yield World(runner, app[GATES]["nginx"], app, keys)
        finally:
            runner.run(app_runner.cleanup())


def code(reason: object) -> tuple[str | None, str | None]:
    if reason is None:
        return None, None
    return reason.code, reason.detail  # type: ignore[attr-defined]


async def both(world: World, name: str, method: str, target: str, client: str,
               extra: list[tuple[str, str]]) -> tuple[object, object]:  # fmt: skip
    key, record = world.keys[name]
    headers = [("Authorization", f"Bearer {key}"), *extra]
    explained = await explain(world.app[AUTHORIZER], record, method,
                              f"http://api.example{target}", client, dict(headers))  # fmt: skip
    proxy = [("Host", "api.example"), ("X-Original-URI", target), ("X-Original-Method", method),
             ("X-Real-IP", client)]  # fmt: skip
    nginx = CIMultiDict([*proxy, *headers])
    decision, _ = await world.gate.answer(Inbound("GET", "/auth/nginx", "api.example", nginx,
                                                  "127.0.0.1"))  # fmt: skip
    return (explained["reason"], explained["detail"]), code(decision.reason)


COMMON_PATHS = ["/v1/chat/completions", "/v1/models", "/admin/users", "/v1/chat/a/../b",
                "/v1/chat/%2e%2e/x", "/v1/chat/x%2Fy", "/v1/Chat/x", "/v1/models/", "//v1/models",
                "/v1/chat/completions#frag"]  # fmt: skip
paths = st.one_of(
    st.sampled_from(COMMON_PATHS),
    st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=5).map(lambda s: "/" + "/".join(s)),
)
requests = st.tuples(
    st.sampled_from(sorted(KEYS)),
    st.one_of(st.sampled_from(["GET", "POST"]), st.sampled_from(METHODS)),
    paths,
    st.one_of(st.just(""), st.sampled_from(QUERIES)),
    st.sampled_from(CLIENTS),
    st.one_of(
        st.just([]),
        st.lists(st.sampled_from(EXTRA_HEADERS), max_size=2, unique_by=lambda h: h[0].lower()),
    ),
)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(request=requests)
def test_explain_gives_the_auth_path_s_reason(
    world: World, request: tuple[str, str, str, str, str, list[tuple[str, str]]]
) -> None:
    name, method, path, query, client, extra = request
    explained, answered = world.runner.run(both(world, name, method, path + query, client, extra))
    assert explained == answered, (request, explained, answered)


def test_limits_are_looked_at_and_spent_the_same(world: World) -> None:
    """Each limited key, asked until refused: explain turns with the real answer."""
    for name, refused in (("rate", "rate_limited"), ("quota", "quota_exceeded"),
                          ("budget", "quota_exceeded")):  # fmt: skip
        seen = []
        for _ in range(8):
            explained, answered = world.runner.run(
                both(world, name, "POST", "/v1/chat/completions", "192.0.2.1", [])
            )
            assert explained == answered, (name, seen, explained, answered)
            seen.append(answered[0])
        assert seen[0] is None and seen[-1] == refused, (name, seen)
