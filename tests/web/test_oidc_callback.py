"""The OpenID Connect callback through the app (aiohttp's test client, a real SQLite
file, the small provider of tests/test_oidc.py): who a verified email signs in as, and
the refusal page (never a 503) for an address keystile does not take."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from keystile import config
from keystile.admin.context import ADMIN_CONTEXT
from keystile.manage.context import AdminContext
from keystile.server import ADMIN_APP, make_app
from tests.admin.helpers import ADMIN
from tests.test_oidc import CLIENT, SECRET, FakeIdP, idp

ORIGIN = "http://127.0.0.1:8080"
__all__ = ["idp"]  # the fixture, used by name


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, db_path: Path, idp: FakeIdP) -> TestClient:
    toml = tmp_path / "keystile.toml"
    toml.write_text('[oidc]\nemail_domains = ["example.com"]\n')
    settings = config.load({
        "KEYSTILE_DB": str(db_path), "KEYSTILE_CONFIG": str(toml), "KEYSTILE_ADMIN_KEY": ADMIN,
        "KEYSTILE_OIDC_ISSUER": idp.issuer, "KEYSTILE_OIDC_CLIENT_ID": CLIENT,
        "KEYSTILE_OIDC_CLIENT_SECRET": SECRET, "KEYSTILE_OIDC_EXTERNAL_URL": ORIGIN,
    })  # fmt: skip
    client: TestClient = await aiohttp_client(make_app(settings))
    return client


def services(client: TestClient) -> AdminContext:
    ctx = client.app[ADMIN_APP][ADMIN_CONTEXT].context
    assert ctx is not None
    return ctx


async def callback(client: TestClient, idp: FakeIdP, email: str) -> Any:
    """Start a sign-in, let the provider vouch for ``email`` (verified), come back."""
    start = await client.get("/_keystile/oidc/start?rd=/", allow_redirects=False)
    assert start.status == 303, await start.text()
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    now = int(time.time())
    idp.nonce = query["nonce"][0]
    idp.claims = {"email": email, "email_verified": True, "iat": now, "exp": now + 300}
    # the binding cookie is Secure (as served behind https): sent by hand over plain http
    binding = "; ".join(f"{name}={morsel.value}" for name, morsel in start.cookies.items())
    response = await client.get("/_keystile/oidc/callback", allow_redirects=False,
                                params={"state": query["state"][0], "code": "c"},
                                headers={"Cookie": binding})  # fmt: skip
    return response, await response.text()


def session_cookie(response: Any) -> str | None:
    morsel = response.cookies.get("__Host-keystile")
    return morsel.value if morsel is not None and morsel.value else None


async def test_an_existing_admin_is_found_by_an_ascii_case_difference(
    client: TestClient, idp: FakeIdP
) -> None:
    kim = await services(client).accounts.create_user("kim@example.com", role="admin",
                                                      email="kim@example.com")  # fmt: skip
    response, body = await callback(client, idp, "Kim@EXAMPLE.com")
    assert response.status == 303, body
    assert session_cookie(response) is not None
    sessions = await services(client).keys.store.list_sessions(kim.id, now=time.time())
    assert len(sessions) == 1  # signed in as kim, the one user
    assert len(await services(client).keys.store.list_users()) == 1


@pytest.mark.parametrize("email", [
    "\u212aim@example.com",  # KELVIN SIGN: Python's lower() makes it k
    "kim@exampl\u212a.com",  # in the domain
    "\uff4bim@example.com",  # FULLWIDTH k: NFKC makes it k
    "k\u0131m@example.com",  # dotless i: upper() makes it I
    "kim@example.com\u200b",  # a zero-width space after it
])  # fmt: skip
async def test_a_look_alike_of_an_admin_s_email_does_not_sign_in_as_the_admin(
    client: TestClient, idp: FakeIdP, email: str
) -> None:
    await services(client).accounts.create_user("kim@example.com", role="admin",
                                                email="kim@example.com")  # fmt: skip
    response, body = await callback(client, idp, email)
    assert response.status == 403, body
    assert "Reason: <code>email_invalid</code>" in body
    assert session_cookie(response) is None
    users = await services(client).keys.store.list_users()
    assert [user.external_id for user in users] == ["kim@example.com"]


@pytest.mark.parametrize("email", [
    "ana@evil.com@example.com",
    '"ana@evil.com"@example.com',
    '"ana"@example.com',
    "ana@example.com\n",
    "ana\r\n@example.com",
    "ana @example.com",
    "ana@example",
    ".ana@example.com",
    "ana..b@example.com",
    "ana@-example.com",
    "ana@example..com",
    "an\u00e4@example.com",
    "ana@ex\u00e4mple.com",
    "(comment)ana@example.com",
    "ana@[127.0.0.1]",
    "a" * 65 + "@example.com",
    "ana@" + "a" * 250 + ".example.com",
])  # fmt: skip
async def test_an_address_keystile_does_not_take_gets_a_refusal_page(
    client: TestClient, idp: FakeIdP, email: str
) -> None:
    response, body = await callback(client, idp, email)
    assert response.status == 403, body
    assert "Reason: <code>email_invalid</code>" in body
    assert "is not an email address keystile accepts" in body
    assert session_cookie(response) is None
    assert await services(client).keys.store.list_users() == []
