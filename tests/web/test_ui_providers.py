"""Upstream credential bindings in the web UI: a select of configured names for
admins (keys and teams), the name shown and never a value, members unable to bind."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from keystile import config
from keystile.server import make_app
from tests.admin.helpers import ADMIN, CONFIG, call
from tests.web.test_ui import get, person, post

PROVIDERS = """
[credentials.team-a]
env = "UP_A"

[credentials.team-b]
value = "sk-b-never-shown"
"""


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, db_path: Path) -> TestClient:
    toml = tmp_path / "keystile.toml"
    toml.write_text('[sessions]\nmember_scopes = ["chat"]\n' + CONFIG + PROVIDERS)
    settings = config.load({"KEYSTILE_DB": str(db_path), "KEYSTILE_CONFIG": str(toml),
                            "KEYSTILE_ADMIN_KEY": ADMIN, "UP_A": "sk-a-never-shown"})  # fmt: skip
    made: TestClient = await aiohttp_client(make_app(settings))
    return made


def never_a_value(page: str) -> None:
    assert "never-shown" not in page


async def test_an_admin_binds_keys_and_teams_by_name(client: TestClient) -> None:
    _, admin = await person(client, "root", "admin")
    form_page = await get(client, "/keys/new", admin)
    assert 'name="credential"' in form_page and 'value="team-b"' in form_page
    never_a_value(form_page)
    form = {"once": "p1", "name": "bot", "expiry": "never", "credential": "team-b"}
    _, body = await post(client, "/keys/new", admin, form, 200)
    key_id = re.search(r"/keys/(key_[0-9A-Za-z]+)", body)[1]  # type: ignore[index]
    assert (await call(client, "GET", f"/keys/{key_id}"))["credential"] == "team-b"
    page = await get(client, f"/keys/{key_id}", admin)
    assert "Upstream credential" in page and "team-b" in page
    never_a_value(page)
    # saving the edit form unchanged keeps the binding; choosing none removes it
    edit = {"name": "bot", "expiry": "keep", "credential": "team-b"}
    await post(client, f"/keys/{key_id}", admin, edit)
    assert (await call(client, "GET", f"/keys/{key_id}"))["credential"] == "team-b"
    await post(client, f"/keys/{key_id}", admin, {**edit, "credential": ""})
    assert (await call(client, "GET", f"/keys/{key_id}"))["credential"] is None
    _, body = await post(client, f"/keys/{key_id}", admin, {**edit, "credential": "zz"}, 422)
    assert "credential" in body and "zz" in body

    response, _ = await post(client, "/teams", admin, {"name": "ml", "credential": "team-a"})
    team_id = response.headers["Location"].split("/")[-1].split("?")[0]
    assert (await call(client, "GET", f"/teams/{team_id}"))["credential"] == "team-a"
    team_page = await get(client, f"/teams/{team_id}", admin)
    assert 'value="team-a" selected' in team_page
    await post(client, f"/teams/{team_id}", admin, {"name": "ml", "credential": "team-b"})
    assert (await call(client, "GET", f"/teams/{team_id}"))["credential"] == "team-b"
    listing = await get(client, "/teams", admin)
    assert "team-b" in listing
    never_a_value(listing + team_page)


async def test_a_member_is_offered_no_select_and_cannot_bind(client: TestClient) -> None:
    _, cookie = await person(client, "ana")
    assert 'name="credential"' not in await get(client, "/keys/new", cookie)
    form = {"once": "m1", "name": "mine", "scope": "chat", "expiry": "30", "credential": "team-b"}
    _, body = await post(client, "/keys/new", cookie, form, 200)
    key_id = re.search(r"/keys/(key_[0-9A-Za-z]+)", body)[1]  # type: ignore[index]
    assert (await call(client, "GET", f"/keys/{key_id}"))["credential"] is None
    page = await get(client, f"/keys/{key_id}", cookie)
    assert 'name="credential"' not in page
    edit = {"name": "mine", "scope": "chat", "expiry": "keep", "credential": "team-b"}
    await post(client, f"/keys/{key_id}", cookie, edit)
    assert (await call(client, "GET", f"/keys/{key_id}"))["credential"] is None
