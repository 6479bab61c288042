"""Every door judges a caller by the same rules: a signed-in member whose team is
limited to 10.0.0.0/8 (or whose team's rate limit is spent) is refused through the
proxy, the admin API (her keys:self key), the UI and ``whoami`` alike from outside,
and let in through all of them from inside. The UI used to check only that the
session existed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from keystile import config
from keystile.server import make_app
from tests.admin.helpers import ADMIN, CONFIG, call, status_of

from .test_ui import UI, person

SESSION_ROUTE = """
[[routes]]
name = "dashboard"
path = "/dash/*"
sessions = true
"""
INSIDE, OUTSIDE = "10.1.2.3", "192.0.2.9"


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, db_path: Path) -> TestClient:
    toml = tmp_path / "keystile.toml"
    toml.write_text('[sessions]\nmember_scopes = ["chat"]\n' + CONFIG + SESSION_ROUTE)
    settings = config.load(
        {"KEYSTILE_DB": str(db_path), "KEYSTILE_CONFIG": str(toml), "KEYSTILE_ADMIN_KEY": ADMIN}
    )
    client: TestClient = await aiohttp_client(make_app(settings))
    return client


async def member_of(client: TestClient, team: dict[str, Any]) -> tuple[str, str, str]:
    """(user id, session cookie, keys:self key) of a member of a new team."""
    made = await call(client, "POST", "/teams", 201, json=team)
    user_id, cookie = await person(client, "ana")
    await call(client, "PATCH", f"/users/{user_id}", 200, json={"team_id": made["id"]})
    body = {"name": "self", "user_id": user_id, "scopes": ["keys:self", "chat"]}
    key = await call(client, "POST", "/keys", 201, json=body)
    return user_id, cookie, key["key"]


async def doors(client: TestClient, cookie: str, key: str, address: str) -> dict[str, int]:
    """The status each door answers the member coming from ``address``."""
    forwarded = {"X-Forwarded-For": address}
    found = {}
    proxy = await client.get("/auth/nginx", headers={
        "Cookie": cookie, "X-Original-URI": "/dash/home", "X-Real-IP": address})  # fmt: skip
    found["proxy"] = proxy.status
    found["api"], _ = await status_of(client, "GET", "/keys", key, headers=forwarded)
    page = await client.get(UI + "/keys", headers={"Cookie": cookie, **forwarded},
                            allow_redirects=False)  # fmt: skip
    found["ui"] = page.status
    made = await client.post(UI + "/keys/new", headers={"Cookie": cookie, **forwarded,
                                                         "Origin": f"http://{client.host}:{client.port}"},
                             data={"once": address, "name": "from " + address, "scope": "chat",
                                   "expiry": "30"}, allow_redirects=False)  # fmt: skip
    found["ui form"] = made.status
    who = await client.get("/_keystile/whoami", headers={"Cookie": cookie, **forwarded})
    found["whoami"] = who.status
    return found


async def test_a_team_allowlist_holds_at_every_door(client: TestClient) -> None:
    user_id, cookie, key = await member_of(client, {"name": "office",
                                                    "allowed_ips": ["10.0.0.0/8"]})  # fmt: skip
    outside = await doors(client, cookie, key, OUTSIDE)
    assert outside == {"proxy": 403, "api": 403, "ui": 403, "ui form": 403, "whoami": 403}
    inside = await doors(client, cookie, key, INSIDE)
    assert inside == {"proxy": 200, "api": 200, "ui": 200, "ui form": 200, "whoami": 200}
    # the refused form made no key; the admitted one made exactly one
    mine = await call(client, "GET", f"/keys?user_id={user_id}", 200)
    names = sorted(k["name"] for k in mine["data"])
    assert names == ["from " + INSIDE, "self"], names


async def test_an_admin_in_an_allowlisted_team_gets_no_admin_page_from_outside(
    client: TestClient,
) -> None:
    team = {"name": "ops", "allowed_ips": ["10.0.0.0/8"]}
    made = await call(client, "POST", "/teams", 201, json=team)
    user_id, cookie = await person(client, "root", role="admin")
    await call(client, "PATCH", f"/users/{user_id}", 200, json={"team_id": made["id"]})
    for path in ("/users", "/teams", "/keys", "/activity"):
        page = await client.get(UI + path, headers={"Cookie": cookie, "X-Forwarded-For": OUTSIDE},
                                allow_redirects=False)  # fmt: skip
        assert page.status == 403, path
        assert "Users" not in await page.text()
