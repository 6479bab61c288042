"""Named upstream credentials ("providers"): config, the core's choice, and what an
allow sends upstream over the wire (the per-key reply memo never mixes bindings)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from keystile import config
from keystile.admin.context import ADMIN_CONTEXT
from keystile.cli import config_check
from keystile.core import reasons
from keystile.core.decide import Presented, Rules
from keystile.core.errors import ConfigError, InvalidInput
from keystile.core.keys import Hasher
from keystile.core.model import KeyRecord, TeamPolicy
from keystile.core.routes import load_routes
from keystile.manage.accounts import AccountService
from keystile.manage.service import KeyService
from keystile.serve.gate import GATES
from keystile.serve.wire import AuthListener
from keystile.server import ADMIN_APP, METRICS, make_app
from keystile.store import Audit, Store
from tests.backends import BOTH

from .test_wire import exchange, status

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL

NOW = 1_800_000_000.0
CREDENTIALS = {
    "team-a": {"env": "UP_A", "format": "Bearer {}"},
    "team-b": {"file": "", "format": "Bearer {}"},  # file set per test
    "team-c": {"value": "sk-c"},
}
ROUTES = [
    {"name": "chat", "path": "/v1/chat/*",
     "inject": {"Authorization": {"credentials": ["team-a", "team-b"], "default": "team-a"}}},
    {"name": "strict", "path": "/v1/strict/*",
     "inject": {"Authorization": {"credentials": ["team-a", "team-b"]}}},
]  # fmt: skip


@pytest.fixture
def credentials(tmp_path: Path) -> dict[str, Any]:
    secret = tmp_path / "b.secret"
    secret.write_text("sk-b\n")
    return {**CREDENTIALS, "team-b": {"file": str(secret), "format": "Bearer {}"}}


@pytest.fixture
def rules(credentials: dict[str, Any]) -> Rules:
    table, errors = load_routes(ROUTES, {"UP_A": "sk-a"}, None, credentials=credentials)
    assert errors == []
    return Rules(table)


def record(credential: str | None = None, team: str | None = None, **fields: Any) -> KeyRecord:
    return KeyRecord(id="key_1", key_hash="h", hash_scheme="sha256", display_prefix="ks_abc",
                     name="bot", created_at=0.0, updated_at=0.0, credential=credential,
                     team=None if team is None else TeamPolicy("team_1", credential=team),
                     **fields)  # fmt: skip


CASES = [
    # (name, key binding, team binding, path, detail of the denial or None, injected)
    ("key binding", "team-b", None, "/v1/chat/x", None, "Bearer sk-b"),
    ("key binding wins over team", "team-b", "team-a", "/v1/chat/x", None, "Bearer sk-b"),
    ("team fallback", None, "team-b", "/v1/chat/x", None, "Bearer sk-b"),
    ("route default", None, None, "/v1/chat/x", None, "Bearer sk-a"),
    ("no default: denied", None, None, "/v1/strict/x", "no_credential", None),
    ("bound, not listed: denied", "team-c", None, "/v1/chat/x", "credential_not_allowed", None),
    ("team bound, not listed", None, "team-c", "/v1/strict/x", "credential_not_allowed", None),
    ("unknown name: denied", "gone", None, "/v1/chat/x", "credential_not_allowed", None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "key", "team", "path", "detail", "injected"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_the_bound_credential_is_chosen(rules: Rules, name: str, key: str | None,
                                        team: str | None, path: str, detail: str | None,
                                        injected: str | None) -> None:  # fmt: skip
    rec = record(key, team)
    decision = rules.decide(Presented("t", "GET", "api.local", path, None), rec, None, NOW)
    if detail is None:
        assert decision.reason is None
        upstream = dict(rules.grant(rec, decision.route).upstream)
        assert upstream["Authorization"] == injected
    else:
        assert decision.reason is not None
        assert (decision.reason.code, decision.reason.detail) == ("route_not_allowed", detail)
        assert decision.reason.outcome.value == 403
        assert "sk-" not in decision.reason.message and "team-" not in decision.reason.message


def test_a_client_copy_of_a_credential_header_is_stripped(rules: Rules) -> None:
    grant = rules.grant(record(), None)
    assert "authorization" in grant.strip


def test_config_errors_are_all_collected_and_name_the_key() -> None:
    credentials = {"Bad Name": {"value": "x"}, "two": {"env": "A", "value": "b"},
                   "literal": "sk-inline", "unset": {"env": "NOT_SET"}}  # fmt: skip
    routes = [{"name": "r", "path": "/r", "inject": {
        "Authorization": {"credentials": ["missing"], "default": "other"},
        "X-Up": {"credentials": "unset", "extra": 1}}}]  # fmt: skip
    _, errors = load_routes(routes, {}, None, credentials=credentials)
    text = "\n".join(errors)
    for wanted in ("credentials.Bad Name", "credentials.two: give exactly one",
                   "credentials.literal: must be a table",
                   "credentials.unset: environment variable 'NOT_SET'",
                   "routes[0].inject.Authorization.credentials: no [credentials.missing]",
                   "routes[0].inject.Authorization.default='other'",
                   "routes[0].inject.X-Up: unknown key 'extra'",
                   "routes[0].inject.X-Up.credentials='unset'"):  # fmt: skip
        assert wanted in text, text
    assert "sk-inline" not in text


CONFIG = """
[credentials.team-a]
env = "UP_A"
format = "Bearer {}"

[credentials.team-b]
value = "sk-b-literal"

[[routes]]
name = "chat"
path = "/v1/chat/*"
[routes.inject]
Authorization = { credentials = ["team-a", "team-b"], default = "team-a" }
"""


def load(tmp_path: Path, db_path: Path, text: str = CONFIG, **env: str) -> config.Settings:
    toml = tmp_path / "keystile.toml"
    toml.write_text(text)
    return config.load({"KEYSTILE_DB": str(db_path), "KEYSTILE_CONFIG": str(toml),
                        "UP_A": "sk-a-secret", **env})  # fmt: skip


def test_config_check_lists_credential_names_never_values(
    tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load(tmp_path, db_path)
    assert sorted(settings.routes.credentials) == ["team-a", "team-b"]
    assert repr(settings.routes.credentials["team-a"]) == "Secret(***)"
    config_check(settings, False)
    config_check(settings, True)
    out = capsys.readouterr().out
    assert "team-a" in out and "team-b" in out and "Authorization" in out
    assert "sk-a-secret" not in out and "sk-b-literal" not in out


def test_a_route_naming_an_unconfigured_credential_fails_to_load(
    tmp_path: Path, db_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"no \[credentials.team-z\]"):
        load(tmp_path, db_path, CONFIG.replace('"team-b"]', '"team-z"]'))


async def test_binding_an_unknown_name_names_the_field_and_value(store: Store) -> None:
    service = KeyService(store, Hasher(), credentials=frozenset({"team-a"}))
    with pytest.raises(InvalidInput) as caught:
        await service.create("k", credential="team-q")
    assert caught.value.field == "credential" and "'team-q'" in str(caught.value)


# -- over the wire: the reply memo is per key, and a team change reaches it ---------


@pytest.fixture
async def served(tmp_path: Path, db_path: Path) -> AsyncIterator[tuple[int, web.Application]]:
    app = make_app(load(tmp_path, db_path))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    listener = AuthListener(app[GATES].values(), runner.server, app[METRICS], idle_timeout=1)
    server = await asyncio.get_running_loop().create_server(listener, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], app
    server.close()
    await listener.close(1.0)
    await runner.cleanup()


def ask(key: str) -> bytes:
    return (f"GET /auth/nginx HTTP/1.1\r\nHost: keystile\r\nX-Original-URI: /v1/chat/x\r\n"
            f"Authorization: Bearer {key}\r\n\r\n").encode()  # fmt: skip


def injected(reply: bytes) -> str:
    assert status(reply) == 200, reply
    lines = reply.decode().split("\r\n")
    (value,) = [line.split(": ", 1)[1] for line in lines if line.startswith("Authorization:")]
    return value


async def test_each_key_gets_its_own_binding_and_a_team_change_reaches_the_memo(
    served: tuple[int, web.Application],
) -> None:
    port, app = served
    ctx = app[ADMIN_APP][ADMIN_CONTEXT].context
    team = await ctx.accounts.create_team("ml")
    user = await ctx.accounts.create_user("ana", team.id)
    a = (await ctx.keys.create("a", credential="team-a")).key
    b = (await ctx.keys.create("b", credential="team-b")).key
    unbound = (await ctx.keys.create("u", user_id=user.id)).key
    for _ in range(3):  # the second and third answers come from each key's memo
        replies = await exchange(port, ask(a) + ask(b) + ask(unbound) + ask(a), replies=4)
        got = [injected(reply) for reply in replies]
        assert got == ["Bearer sk-a-secret", "sk-b-literal", "Bearer sk-a-secret",
                       "Bearer sk-a-secret"]  # fmt: skip
    await ctx.accounts.update_team(team.id, credential="team-b")  # the unbound key's team
    (reply,) = await exchange(port, ask(unbound))
    assert injected(reply) == "sk-b-literal"
    await ctx.accounts.update_team(team.id, credential=None)
    (reply,) = await exchange(port, ask(unbound))
    assert injected(reply) == "Bearer sk-a-secret"


async def test_a_key_bound_elsewhere_is_denied_with_the_reason(
    tmp_path: Path, db_path: Path, served: tuple[int, web.Application]
) -> None:
    port, app = served
    ctx = app[ADMIN_APP][ADMIN_CONTEXT].context
    issued = await ctx.keys.create("a", credential="team-a")
    # bound to a name the config later dropped (the store keeps the name)
    await ctx.keys.store.update_key(issued.record.id, {"credential": "retired"},
                                    Audit("test", "key.update"))  # fmt: skip
    ctx.keys._changed(issued.record)
    (reply,) = await exchange(port, ask(issued.key))
    assert status(reply) == 403
    assert b"credential_not_allowed" in reply
    assert b"sk-a-secret" not in reply and b"retired" not in reply
    assert reasons.CREDENTIAL_NOT_ALLOWED in reasons.REASONS


async def test_a_binding_change_of_key_or_team_writes_the_change_log(
    store: Store,
) -> None:
    keys = KeyService(store, Hasher(), credentials=frozenset({"team-a"}))
    accounts = AccountService(keys)
    team = await accounts.create_team("ml")
    user = await accounts.create_user("ana", team.id)
    mine = (await keys.create("k", user_id=user.id)).record

    async def logged() -> list[str]:
        rows = await store._fetch("", "SELECT key_id FROM key_events ORDER BY seq")
        return [row[0] for row in rows]

    before = len(await logged())
    await keys.update(mine.id, credential="team-a")
    assert (await logged())[before:] == [mine.id]
    await accounts.update_team(team.id, credential="team-a")
    assert (await logged())[before + 1 :] == [mine.id]
    stored = await store.get_key(mine.id)
    assert stored.credential == "team-a" and stored.team is not None
    assert stored.team.credential == "team-a"


async def test_rotation_keeps_the_binding(store: Store) -> None:
    keys = KeyService(store, Hasher(), credentials=frozenset({"team-a"}))
    old = (await keys.create("k", credential="team-a")).record
    rotation = await keys.rotate(old.id, 60)
    assert rotation.new.record.credential == "team-a"
    assert (await store.get_key(rotation.new.record.id)).credential == "team-a"
