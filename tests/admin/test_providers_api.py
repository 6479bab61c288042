"""Upstream credential bindings through the admin API: by name, validated, audited;
a keys:self caller may not bind one."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from keystile import config
from keystile.server import make_app
from tests.admin.helpers import ADMIN, CONFIG, call, status_of

PROVIDERS = (
    CONFIG
    + """
[credentials.team-a]
env = "UP_A"

[credentials.team-b]
value = "sk-b-never-shown"
"""
)


@pytest.fixture
async def api(aiohttp_client, tmp_path: Path, db_path: Path) -> TestClient:  # type: ignore[no-untyped-def]
    toml = tmp_path / "keystile.toml"
    toml.write_text(PROVIDERS)
    settings = config.load({"KEYSTILE_DB": str(db_path), "KEYSTILE_CONFIG": str(toml),
                            "KEYSTILE_ADMIN_KEY": ADMIN, "UP_A": "sk-a-never-shown"})  # fmt: skip
    return await aiohttp_client(make_app(settings))


async def test_keys_and_teams_bind_by_name_and_changes_are_audited(api: TestClient) -> None:
    key = await call(api, "POST", "/keys", 201, json={"name": "k", "credential": "team-a"})
    assert key["credential"] == "team-a"
    assert (await call(api, "GET", f"/keys/{key['id']}", 200))["credential"] == "team-a"
    changed = await call(api, "PATCH", f"/keys/{key['id']}", 200, json={"credential": "team-b"})
    assert changed["credential"] == "team-b"
    kept = await call(api, "PATCH", f"/keys/{key['id']}", 200, json={"name": "k2"})
    assert kept["credential"] == "team-b"
    cleared = await call(api, "PATCH", f"/keys/{key['id']}", 200, json={"credential": None})
    assert cleared["credential"] is None

    team = await call(api, "POST", "/teams", 201, json={"name": "ml", "credential": "team-b"})
    assert team["credential"] == "team-b"
    team = await call(api, "PATCH", f"/teams/{team['id']}", 200, json={"credential": "team-a"})
    assert team["credential"] == "team-a"
    assert (await call(api, "GET", f"/teams/{team['id']}", 200))["credential"] == "team-a"

    audit = await call(api, "GET", "/audit", 200)
    text = str(audit)
    assert "team-b" in text and "never-shown" not in text


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/keys", {"name": "k", "credential": "team-z"}),
    ("POST", "/teams", {"name": "t", "credential": "team-z"}),
])  # fmt: skip
async def test_an_unknown_name_is_a_422_naming_field_and_value(
    api: TestClient, method: str, path: str, body: dict[str, str]
) -> None:
    status, answer = await status_of(api, method, path, json=body)
    assert status == 422
    assert "credential" in answer["error"]["message"] and "team-z" in answer["error"]["message"]


async def test_a_self_service_key_may_not_bind_a_credential(api: TestClient) -> None:
    own = await call(api, "POST", "/keys", 201, json={"name": "self", "owner": "ana",
                                                       "scopes": ["keys:self"]})  # fmt: skip
    status, answer = await status_of(api, "POST", "/keys", key=own["key"],
                                     json={"name": "c", "credential": "team-a"})  # fmt: skip
    assert status == 403 and answer["error"]["code"] == "credential_not_grantable"
    child = await call(api, "POST", "/keys", 201, key=own["key"], json={"name": "c"})
    assert child["credential"] is None
    status, answer = await status_of(api, "PATCH", f"/keys/{child['id']}", key=own["key"],
                                     json={"credential": None})  # fmt: skip
    assert status == 403
