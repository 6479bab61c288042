"""The web UI through aiohttp's test client on a real SQLite file: who may see and do
what (the admin API's rules), keys shown once, forms refused from elsewhere."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from keystile import config
from keystile.admin.context import ADMIN_CONTEXT
from keystile.core.durations import parse_instant
from keystile.manage.context import AdminContext
from keystile.server import ADMIN_APP, make_app
from keystile.web.ui import charts
from tests.admin.helpers import ADMIN, CONFIG, call

UI = "/_keystile/ui"
KEY_RE = re.compile(r"ks_[0-9A-Za-z]{49}")


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, db_path: Path) -> TestClient:
    toml = tmp_path / "keystile.toml"
    toml.write_text('[sessions]\nmember_scopes = ["chat"]\n' + CONFIG)
    settings = config.load(
        {"KEYSTILE_DB": str(db_path), "KEYSTILE_CONFIG": str(toml), "KEYSTILE_ADMIN_KEY": ADMIN}
    )
    app = make_app(settings)
    client: TestClient = await aiohttp_client(app)
    return client


def services(client: TestClient) -> AdminContext:
    ctx = client.app[ADMIN_APP][ADMIN_CONTEXT].context
    assert ctx is not None
    return ctx


async def person(client: TestClient, name: str, role: str = "member") -> tuple[str, str]:
    """(user id, a Cookie header of a session of theirs)."""
    ctx = services(client)
    user = await ctx.accounts.create_user(name, role=role)
    signed = await ctx.sessions.start(user, "127.0.0.1", "test", "session.login")
    return user.id, f"__Host-keystile={signed.token}"


async def get(client: TestClient, path: str, cookie: str, status: int = 200) -> str:
    response = await client.get(UI + path, headers={"Cookie": cookie}, allow_redirects=False)
    body = await response.text()
    assert response.status == status, body
    return body


async def post(
    client: TestClient, path: str, cookie: str, data: Any, status: int = 303, **headers: str
) -> Any:
    response = await client.post(
        UI + path, data=data, headers={"Cookie": cookie, **headers}, allow_redirects=False
    )
    body = await response.text()
    assert response.status == status, body
    return response, body


async def test_not_signed_in_goes_to_the_sign_in_page_and_back(client: TestClient) -> None:
    response = await client.get(UI + "/keys?state=all", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/_keystile/login?rd=/_keystile/ui/keys%3Fstate%3Dall"
    response = await client.post(UI + "/keys/new", data={"name": "x"}, allow_redirects=False)
    assert response.status == 401


async def test_a_member_sees_only_their_own_keys_and_another_s_is_not_found(
    client: TestClient,
) -> None:
    ana, ana_cookie = await person(client, "ana")
    bob, _ = await person(client, "bob")
    mine = await call(client, "POST", "/keys", 201, json={"name": "ana bot", "user_id": ana})
    theirs = await call(client, "POST", "/keys", 201, json={"name": "bob bot", "user_id": bob})
    listing = await get(client, "/keys", ana_cookie)
    assert "ana bot" in listing and "bob bot" not in listing
    assert "My API keys" in listing and "Users" not in listing
    await get(client, f"/keys/{theirs['id']}", ana_cookie, 404)
    await get(client, f"/keys/{theirs['id']}/revoke", ana_cookie, 404)
    await post(client, f"/keys/{theirs['id']}/revoke", ana_cookie, {"confirm": "yes"}, 404)
    await post(client, f"/keys/{theirs['id']}", ana_cookie, {"name": "taken"}, 404)
    assert (await call(client, "GET", f"/keys/{theirs['id']}"))["state"] == "active"
    # a filter naming another user changes nothing for a member
    assert "bob bot" not in await get(client, f"/keys?user={bob}", ana_cookie)
    assert "ana bot" in await get(client, f"/keys/{mine['id']}", ana_cookie)
    await get(client, "/users", ana_cookie, 403)
    await get(client, f"/activity?key={theirs['id']}", ana_cookie, 404)


async def test_a_key_is_shown_once_and_a_resent_form_makes_no_second_one(
    client: TestClient,
) -> None:
    _, cookie = await person(client, "ana")
    form = {"once": "token-1", "name": "laptop", "scope": "chat", "expiry": "30"}
    response, body = await post(client, "/keys/new", cookie, form, 200)
    assert response.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    (key,) = set(KEY_RE.findall(body))
    key_id = re.search(r"/keys/(key_[0-9A-Za-z]+)", body)[1]  # type: ignore[index]
    again, _ = await post(client, "/keys/new", cookie, form)
    assert again.headers["Location"] == f"{UI}/keys/{key_id}?done=already"
    for page in ("/keys", f"/keys/{key_id}", "/activity", f"/keys/{key_id}?done=already"):
        assert key not in await get(client, page, cookie)
    record = await call(client, "GET", f"/keys/{key_id}")
    assert record["scopes"] == ["chat"] and record["owner"] == "ana"
    left = parse_instant(record["expires_at"]) - time.time()
    assert 29.9 * 86400 < left <= 30 * 86400
    listed = await call(client, "GET", "/keys")
    assert [k["id"] for k in listed["data"]] == [key_id]


async def test_a_member_cannot_grant_what_they_do_not_hold(client: TestClient) -> None:
    _, cookie = await person(client, "ana")
    form = {"once": "t", "name": "too much", "scope": "images", "expiry": "never"}
    _, body = await post(client, "/keys/new", cookie, form, 422)
    assert "more rights than you have yourself" in body and "images" in body
    assert (await call(client, "GET", "/keys"))["data"] == []
    # the form offers only what they may grant
    offered = await get(client, "/keys/new", cookie)
    assert 'value="chat"' in offered and 'value="images"' not in offered


async def test_an_admin_creates_for_a_user_in_a_group_and_the_api_agrees(
    client: TestClient,
) -> None:
    _, admin = await person(client, "root", "admin")
    ana = (await call(client, "POST", "/users", 201, json={"external_id": "ana"}))["id"]
    group = await call(
        client, "POST", "/groups", 201, json={"name": "artists", "scopes": ["images"]}
    )
    form = [
        ("once", "a"),
        ("name", "ana's bot"),
        ("user_id", ana),
        ("group_id", group["id"]),
        ("expiry", "date"),
        ("expires_on", "2099-01-31"),
        ("limit_per_minute", "60"),
        ("allowed_ips", "10.0.0.0/8\n192.0.2.1"),
    ]
    _, body = await post(client, "/keys/new", admin, form, 200)
    key_id = re.search(r"/keys/(key_[0-9A-Za-z]+)", body)[1]  # type: ignore[index]
    record = await call(client, "GET", f"/keys/{key_id}")
    assert record["user_id"] == ana and record["groups"] == ["artists"]
    assert record["limits"] == {"per_minute": 60}
    assert record["allowed_ips"] == ["10.0.0.0/8", "192.0.2.1/32"]
    assert record["expires_at"] == "2099-02-01T00:00:00Z"
    page = await get(client, f"/keys/{key_id}", admin)
    assert "group artists" in page  # the images route, granted through the group
    listing = await get(client, f"/keys?group={group['id']}&expiring=36500", admin)
    assert "ana&#39;s bot" in listing
    assert "ana&#39;s bot" not in await get(client, "/keys?expiring=7", admin)
    assert "ana&#39;s bot" not in await get(client, "/keys?unused=1", admin)


async def test_rotate_and_retire_need_their_own_pages(client: TestClient) -> None:
    ana, cookie = await person(client, "ana")
    key = await call(
        client, "POST", "/keys", 201, json={"name": "bot", "user_id": ana, "scopes": ["chat"]}
    )
    _, body = await post(
        client, f"/keys/{key['id']}/rotate", cookie, {"once": "r", "grace": "1h"}, 200
    )
    (new_key,) = set(KEY_RE.findall(body))
    assert new_key != key["key"]
    old = await call(client, "GET", f"/keys/{key['id']}")
    assert old["replaced_by"] is not None
    new_id = old["replaced_by"]
    response, _ = await post(client, f"/keys/{new_id}/revoke", cookie, {})
    assert response.headers["Location"] == f"{UI}/keys/{new_id}/revoke"  # not confirmed
    assert (await call(client, "GET", f"/keys/{new_id}"))["state"] == "active"
    assert "Revoke this key?" in await get(client, f"/keys/{new_id}/revoke", cookie)
    await post(client, f"/keys/{new_id}/revoke", cookie, {"confirm": "yes"})
    assert (await call(client, "GET", f"/keys/{new_id}"))["state"] == "revoked"
    page = await get(client, f"/keys/{new_id}?done=revoked", cookie)
    assert "key.revoke" in page and new_key not in page


async def test_a_form_from_another_site_is_refused(client: TestClient) -> None:
    _, cookie = await person(client, "ana")
    _, body = await post(
        client,
        "/keys/new",
        cookie,
        {"name": "x", "once": "o"},
        403,
        Origin="https://evil.example",
        **{"Sec-Fetch-Site": "cross-site"},
    )
    assert "another site" in body
    assert (await call(client, "GET", "/keys"))["data"] == []


async def test_admin_pages_users_groups_teams_and_sessions(client: TestClient) -> None:
    _, admin = await person(client, "root", "admin")
    bea, bea_cookie = await person(client, "bea")
    response, _ = await post(client, "/teams", admin, {"name": "ml", "limit_per_hour": "100"})
    team_id = response.headers["Location"].split("/")[-1].split("?")[0]
    await post(
        client,
        f"/users/{bea}",
        admin,
        {"do": "save", "role": "member", "team_id": team_id, "email": "b@example.com"},
    )
    assert (await call(client, "GET", f"/users/{bea}"))["team_id"] == team_id
    response, _ = await post(client, "/groups", admin, {"name": "ops", "scopes": "metrics"})
    group_id = response.headers["Location"].split("/")[-1].split("?")[0]
    await post(client, f"/users/{bea}", admin, {"do": "join", "group_id": group_id})
    assert "bea" in await get(client, f"/groups/{group_id}", admin)
    page = await get(client, f"/users/{bea}", admin)
    assert "ops" in page and "End every session" in page
    await post(client, f"/users/{bea}/sessions", admin, {})
    await get(client, "/keys", bea_cookie, 303)  # her session ended: to the sign-in page
    await post(client, f"/users/{bea}", admin, {"do": "disable"})
    assert (await call(client, "GET", f"/users/{bea}"))["disabled"] is True
    _, body = await post(client, "/users", admin, {"name": "", "role": "member"}, 422)
    assert "external_id" in body
    assert "ml" in await get(client, f"/teams/{team_id}", admin)
    assert "per hour 100" in await get(client, "/teams", admin)


def test_the_chart_counts_every_bucket_and_escapes_its_title() -> None:
    start = 1_700_000_000 // 3600 * 3600
    series = charts.buckets(
        [(start, "allow", 3), (start, "rate_limited", 1), (start + 7200, "allow", 2)],
        start,
        3600,
        now=start + 3 * 3600,
    )
    assert series == [
        (start, 3, 1),
        (start + 3600, 0, 0),
        (start + 7200, 2, 0),
        (start + 10800, 0, 0),
    ]
    svg = charts.volume_svg(series, 3600, "<b>x</b>")
    assert "&lt;b&gt;x&lt;/b&gt;" in svg and "<b>" not in svg
    assert "5 allowed, 1 denied" in svg
