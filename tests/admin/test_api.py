"""The admin API through aiohttp, on a real SQLite file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from keystile import config
from keystile.admin import ENDPOINTS, PREFIX
from keystile.server import ADMIN_APP, ADMIN_ROOT, make_app
from tests.backends import BOTH

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL

ADMIN = "admin-key-for-tests-0123456789"
CONFIG = """
[[routes]]
name = "chat"
path = "/v1/chat/*"
scopes = ["chat"]
[routes.inject]
Authorization = { env = "UP", format = "Bearer {}" }

[[routes]]
name = "images"
path = "/v1/images/*"
scopes = ["images"]
"""


@pytest.fixture
def settings(tmp_path: Path, db_path: Path) -> config.Settings:
    toml = tmp_path / "keystile.toml"
    toml.write_text(CONFIG)
    return config.load({"KEYSTILE_DB": str(db_path), "KEYSTILE_CONFIG": str(toml),
                        "KEYSTILE_ADMIN_KEY": ADMIN, "UP": "sk-up-secret"})  # fmt: skip


@pytest.fixture
async def client(aiohttp_client, settings: config.Settings) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(make_app(settings))


def auth(key: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def call(client: TestClient, method: str, path: str, status: int, key: str = ADMIN,
               **kwargs: Any) -> Any:  # fmt: skip
    response = await client.request(method, PREFIX + path, headers=auth(key), **kwargs)
    body = await response.json()
    assert response.status == status, body
    return body


async def nginx_status(client: TestClient, key: str, uri: str = "/v1/chat/x") -> int:
    response = await client.get("/auth/nginx", headers={**auth(key), "X-Original-URI": uri})
    return response.status


async def test_full_flow_team_user_key_group_rotate_expire_delete(client: TestClient) -> None:
    team = await call(
        client, "POST", "/teams", 201, json={"name": "ml", "limits": {"per_minute": 60}}
    )
    user = await call(client, "POST", "/users", 201,
                      json={"external_id": "ana@example.com", "team_id": team["id"]})  # fmt: skip
    created = await client.post(
        PREFIX + "/keys",
        headers=auth(),
        json={"name": "ana's bot", "user_id": user["id"], "scopes": ["chat"]},
    )
    assert created.status == 201 and created.headers["Cache-Control"] == "no-store"
    key = await created.json()
    secret, key_id = key.pop("key"), key["id"]
    assert key["owner"] == "ana@example.com" and key["user_id"] == user["id"]
    assert await nginx_status(client, secret, "/v1/images/x") == 403

    group = await call(
        client, "POST", "/groups", 201, json={"name": "artists", "scopes": ["images"]}
    )
    await call(client, "PUT", f"/groups/{group['id']}/keys/{key_id}", 200)
    detail = await call(client, "GET", f"/keys/{key_id}", 200)
    assert detail["groups"] == ["artists"] and detail["granted_scopes"] == ["chat", "images"]
    via = {route["name"]: route["via"] for route in detail["routes"]}
    assert via == {"chat": {"chat": ["key"]}, "images": {"images": ["group:artists"]}}
    assert "sk-up-secret" not in str(detail)
    assert await nginx_status(client, secret, "/v1/images/x") == 200  # at once, same process

    listed = await call(client, "GET", f"/keys?team_id={team['id']}", 200)
    assert [k["id"] for k in listed["data"]] == [key_id]
    assert secret not in str(listed) and "key_hash" not in str(listed)

    headers = {**auth(), "Idempotency-Key": "rot-1"}
    first = await client.post(
        f"{PREFIX}/keys/{key_id}/rotate", headers=headers, json={"grace": "1h"}
    )
    rotation = await first.json()
    assert first.status == 201 and rotation["key"] and rotation["old_id"] == key_id
    again = await client.post(
        f"{PREFIX}/keys/{key_id}/rotate", headers=headers, json={"grace": "1h"}
    )
    replay = await again.json()
    assert replay["id"] == rotation["id"] and replay["key"] is None and replay["replayed"]
    new_id = rotation["id"]
    assert (await call(client, "GET", f"/keys/{new_id}", 200))["groups"] == ["artists"]
    assert await nginx_status(client, secret) == 200  # old key: within its grace
    assert await nginx_status(client, rotation["key"]) == 200

    expired = await call(client, "POST", f"/keys/{key_id}/expire", 200)
    assert expired["state"] == "expired"
    assert await nginx_status(client, secret) == 401
    deleted = await call(client, "DELETE", f"/keys/{new_id}", 200)
    assert deleted["state"] == "deleted"
    assert await nginx_status(client, rotation["key"]) == 401

    audit = await call(client, "GET", "/audit", 200)
    actions = [entry["action"] for entry in audit["data"]]
    for action in ("team.create", "user.create", "key.create", "group.create", "group.add_key",
                   "key.rotate", "key.expire", "key.delete"):  # fmt: skip
        assert action in actions, action
    assert secret not in str(audit) and "key_hash" not in str(audit)
    history = await call(client, "GET", f"/audit?target_id={key_id}", 200)
    assert {e["action"] for e in history["data"]} >= {"key.create", "key.expire"}


async def test_self_service_keys_see_only_their_own(client: TestClient) -> None:
    mine = await call(
        client,
        "POST",
        "/keys",
        201,
        json={"name": "ana self", "owner": "ana", "scopes": ["keys:self", "chat"]},
    )
    other = await call(client, "POST", "/keys", 201, json={"name": "bob", "owner": "bob"})
    own_key = mine["key"]
    made = await call(client, "POST", "/keys", 201, key=own_key,
                      json={"name": "ana child", "scopes": ["chat"], "owner": "bob"})  # fmt: skip
    assert made["owner"] == "ana"  # self-service cannot pick another owner
    listed = await call(client, "GET", "/keys", 200, key=own_key)
    assert {k["owner"] for k in listed["data"]} == {"ana"}
    for method, path in (("GET", f"/keys/{other['id']}"), ("POST", f"/keys/{other['id']}/revoke"),
                         ("DELETE", f"/keys/{other['id']}")):  # fmt: skip
        await call(client, method, path, 404, key=own_key)
    denied = await call(client, "POST", "/keys", 403, key=own_key,
                        json={"name": "escalate", "scopes": ["admin"]})  # fmt: skip
    assert denied["error"]["code"] == "scope_not_grantable"
    await call(client, "POST", "/groups", 403, key=own_key, json={"name": "mine"})
    await call(client, "GET", "/audit", 403, key=own_key)


async def test_who_may_call(client: TestClient) -> None:
    plain = await call(client, "POST", "/keys", 201, json={"name": "plain", "scopes": ["chat"]})
    assert (await call(client, "GET", "/keys", 403, key=plain["key"]))["error"]["type"] == (
        "permission_error"
    )
    response = await client.get(PREFIX + "/keys")
    assert response.status == 401
    await call(client, "GET", "/keys", 401, key="ks_" + "A" * 49)
    admin_scoped = await call(
        client, "POST", "/keys", 201, json={"name": "ops", "scopes": ["admin"]}
    )
    await call(client, "GET", "/teams", 200, key=admin_scoped["key"])
    spec = await client.get(PREFIX + "/openapi.json")  # public
    assert spec.status == 200


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/keys", {"data": b"{not json"}, 400, "invalid_json"),
        ("POST", "/keys", {"data": b"[1, 2]"}, 400, "invalid_json"),
        ("POST", "/keys", {"json": {"name": "x", "colour": "red"}}, 422, "colour"),
        ("POST", "/keys", {"json": {"scopes": ["chat"]}}, 422, "name"),
        ("POST", "/keys", {"json": {"name": "x", "expires_in": "soon"}}, 422, "expires_in"),
        ("POST", "/keys", {"json": {"name": "x", "expires_at": "2001-01-01"}}, 422, "expires_at"),
        ("POST", "/keys", {"json": {"name": "x", "scopes": ["Bad Scope"]}}, 422, "scopes"),
        ("POST", "/keys", {"json": {"name": "x", "allowed_ips": ["10.0.0.300"]}}, 422,
         "allowed_ips"),
        ("POST", "/keys", {"json": {"name": "x", "limits": {"per_minute": 0}}}, 422,
         "limits.per_minute"),
        ("POST", "/keys", {"json": {"name": 5}}, 422, "name"),
        ("POST", "/keys", {"data": b'{"name": "' + b"x" * 70000 + b'"}'}, 413, "body_too_large"),
        ("GET", "/keys/key_missing", {}, 404, "not_found"),
        ("GET", "/keys?state=sleepy", {}, 422, "state"),
        ("GET", "/keys?limit=0", {}, 422, "limit"),
        ("GET", "/keys?cursor=%%%", {}, 422, "cursor"),
        ("POST", "/users", {"json": {"external_id": "x", "team_id": "team_nope"}}, 404,
         "not_found"),
        ("GET", "/nothing-here", {}, 404, "not_found"),
    ],
)  # fmt: skip
async def test_errors_name_the_field_and_never_500(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    body = await call(client, method, path, status, **kwargs)
    assert body["error"]["code"] == code, body


async def test_conflicts_are_409(client: TestClient) -> None:
    await call(client, "POST", "/groups", 201, json={"name": "dup"})
    await call(client, "POST", "/groups", 409, json={"name": "dup"})
    key = await call(client, "POST", "/keys", 201, json={"name": "k"})
    await call(client, "POST", f"/keys/{key['id']}/revoke", 200)
    await call(client, "POST", f"/keys/{key['id']}/rotate", 409, json={"grace": 0})


async def test_pagination(client: TestClient) -> None:
    for n in range(5):
        await call(client, "POST", "/keys", 201, json={"name": f"page {n}"})
    seen, cursor = [], None
    while True:
        page = await call(
            client, "GET", "/keys?limit=2" + (f"&cursor={cursor}" if cursor else ""), 200
        )
        seen += [k["name"] for k in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"page {n}" for n in range(5)]
    found = await call(client, "GET", "/keys?q=page%203", 200)
    assert [k["name"] for k in found["data"]] == ["page 3"]


async def test_openapi_matches_the_router(client: TestClient) -> None:
    spec = await (await client.get(PREFIX + "/openapi.json")).json()
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    routed = {
        (route.method, route.resource.canonical)  # type: ignore[union-attr]
        for route in client.app[ADMIN_APP].router.routes()
        if route.method != "HEAD"
    }
    assert documented == routed == {(ep.method, ep.path) for ep in ENDPOINTS}
    assert spec["openapi"] == "3.1.0"


async def test_separate_admin_listener_keeps_the_api_off_the_main_port(
    aiohttp_client,
    settings: config.Settings,  # type: ignore[no-untyped-def]
) -> None:
    app = make_app(dataclasses.replace(settings, admin_listen=("127.0.0.1", 0)))
    client = await aiohttp_client(app)
    assert (await client.get(PREFIX + "/keys", headers=auth())).status == 404
    assert (await client.get("/healthz")).status == 200
    # the admin listener serves the API under /api/v1, as its OpenAPI document says
    admin = await aiohttp_client(app[ADMIN_ROOT])
    assert (await admin.get(PREFIX + "/keys", headers=auth())).status == 200
    spec = await (await admin.get(PREFIX + "/openapi.json")).json()
    assert spec["openapi"] == "3.1.0"
    assert (await admin.get("/keys", headers=auth())).status == 404


async def test_usage_and_explain(client: TestClient) -> None:
    key = await call(
        client,
        "POST",
        "/keys",
        201,
        json={"name": "metered", "scopes": ["chat"], "limits": {"per_minute": 2}},
    )
    statuses = [await nginx_status(client, key["key"]) for _ in range(3)]
    assert statuses == [200, 200, 403]  # the third is a rate limit (403 + X-Keystile-Status)
    assert await nginx_status(client, key["key"], "/v1/images/x") == 403  # scope
    usage = await call(client, "GET", f"/keys/{key['id']}/usage", 200)
    assert usage["allowed"] == 2 and usage["allowed_by_route"] == {"chat": 2}
    assert usage["denied"] == {"insufficient_scope": 1, "rate_limited": 1}
    assert usage["last_used_at"] is not None

    why = await call(client, "POST", "/explain", 200,
                     json={"key_id": key["id"], "url": "/v1/images/x"})  # fmt: skip
    assert (why["allowed"], why["reason"], why["route"]) == (False, "insufficient_scope", "images")
    assert why["required_scopes"] == ["images"]
    limited = await call(client, "POST", "/explain", 200,
                         json={"key_id": key["id"], "url": "/v1/chat/x"})  # fmt: skip
    assert limited["reason"] == "rate_limited" and limited["retry_after"] >= 1
    # explaining counts nothing
    assert (await call(client, "GET", f"/keys/{key['id']}/usage", 200))["allowed"] == 2


async def test_team_allowlist_applies_to_its_keys(client: TestClient) -> None:
    team = await call(client, "POST", "/teams", 201,
                      json={"name": "office", "allowed_ips": ["10.0.0.0/8"]})  # fmt: skip
    user = await call(
        client, "POST", "/users", 201, json={"external_id": "o", "team_id": team["id"]}
    )
    key = await call(client, "POST", "/keys", 201,
                     json={"name": "k", "user_id": user["id"], "scopes": ["chat"]})  # fmt: skip
    # the test client connects from 127.0.0.1, outside the team's network
    assert await nginx_status(client, key["key"]) == 403
    asked = {"key_id": key["id"], "url": "/v1/chat/x", "client_ip": "10.2.3.4"}
    why = await call(client, "POST", "/explain", 200, json=asked)
    assert why["allowed"] and why["team_allowed_ips"] == ["10.0.0.0/8"]
    renamed = await call(client, "PATCH", f"/keys/{key['id']}", 200, json={"name": "k2"})
    assert renamed["team_id"] == team["id"]  # an update returns the whole record, team included
    audit = await call(client, "GET", f"/audit?target_id={key['id']}&action=key.update", 200)
    assert audit["data"][0]["after"]["team_id"] == team["id"]
    await call(client, "PATCH", f"/teams/{team['id']}", 200, json={"allowed_ips": None})
    assert await nginx_status(client, key["key"]) == 200  # same process: at once


@pytest.mark.parametrize("scope", ["admin", "keys:self"])
async def test_the_caller_key_is_held_to_its_allowlist_state_and_limits(
    client: TestClient, scope: str
) -> None:
    """The admin API judges its caller by the same core as the auth path."""
    fenced = await call(client, "POST", "/keys", 201,
                        json={"name": "fenced", "scopes": [scope],
                              "allowed_ips": ["10.0.0.0/8"]})  # fmt: skip
    denied = await client.get(PREFIX + "/keys", headers=auth(fenced["key"]))
    assert denied.status == 403 and (await denied.json())["error"]["code"] == "ip_not_allowed"
    limited = await call(client, "POST", "/keys", 201,
                         json={"name": "slow", "scopes": [scope],
                               "limits": {"per_minute": 2}})  # fmt: skip
    statuses = [(await client.get(PREFIX + "/keys", headers=auth(limited["key"]))).status
                for _ in range(3)]  # fmt: skip
    assert statuses == [200, 200, 429]
    await call(client, "POST", f"/keys/{limited['id']}/revoke", 200)
    revoked = await client.get(PREFIX + "/keys", headers=auth(limited["key"]))
    assert revoked.status == 401 and (await revoked.json())["error"]["code"] == "revoked_api_key"


async def test_a_created_key_shows_its_team_as_a_later_get_does(client: TestClient) -> None:
    team = await call(client, "POST", "/teams", 201, json={"name": "t-shown"})
    user = await call(client, "POST", "/users", 201,
                      json={"external_id": "bo@example.com", "team_id": team["id"]})  # fmt: skip
    made = await call(client, "POST", "/keys", 201, json={"name": "k", "user_id": user["id"]})
    shown = await call(client, "GET", f"/keys/{made['id']}", 200)
    assert made["team_id"] == shown["team_id"] == team["id"]
