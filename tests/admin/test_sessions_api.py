"""Users and sessions through the admin API and the sign-in pages, in one app: an
admin ends a session, or disables its user, and the session stops answering."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from keystile.admin.context import ADMIN_CONTEXT
from keystile.server import ADMIN_APP
from tests.admin.helpers import call
from tests.backends import BOTH

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL

PASSWORD = "a long pass phrase 42"


async def sign_in(api: TestClient, name: str = "alice") -> str:
    answer = await api.post("/_keystile/login", allow_redirects=False,
                            data={"username": name, "password": PASSWORD, "rd": "/x"})  # fmt: skip
    assert answer.status == 303, await answer.text()
    assert answer.headers["Location"] == "/x"
    return answer.cookies["__Host-keystile"].value


async def whoami(api: TestClient, token: str) -> Any:
    answer = await api.get("/_keystile/whoami", headers={"Cookie": f"__Host-keystile={token}"})
    return answer.status, await answer.json()


async def make_alice(api: TestClient) -> str:
    user = await call(api, "POST", "/users", 201, json={"external_id": "alice",
                                                         "email": "alice@example.com"})  # fmt: skip
    assert user["role"] == "member" and user["has_password"] is False
    # passwords are never sent to the API: set like the CLI does
    ctx = api.server.app[ADMIN_APP][ADMIN_CONTEXT].context
    assert ctx is not None
    await ctx.accounts.set_password(user["id"], PASSWORD)
    return str(user["id"])


async def test_an_admin_lists_and_ends_sessions(api: TestClient) -> None:
    user_id = await make_alice(api)
    first, second = await sign_in(api), await sign_in(api)
    status, me = await whoami(api, first)
    assert status == 200 and me["user"]["name"] == "alice"
    listed = await call(api, "GET", f"/users/{user_id}/sessions", 200)
    assert len(listed["data"]) == 2
    assert all(first not in str(s) and second not in str(s) for s in listed["data"])
    one = listed["data"][0]["id"]
    await call(api, "DELETE", f"/sessions/{one}", 200)
    remaining = await call(api, "GET", "/sessions", 200, params={"user_id": user_id})
    assert [s["id"] for s in remaining["data"]] != [one] and len(remaining["data"]) == 1
    ended = await call(api, "DELETE", f"/users/{user_id}/sessions", 200)
    assert ended == {"user_id": user_id, "ended": 1}
    for token in (first, second):
        assert (await whoami(api, token))[0] == 401


async def test_disabling_a_user_ends_their_sessions_and_sign_in(api: TestClient) -> None:
    user_id = await make_alice(api)
    token = await sign_in(api)
    body = {"disabled": True, "role": "admin"}
    changed = await call(api, "PATCH", f"/users/{user_id}", 200, json=body)
    assert changed["disabled"] is True and changed["role"] == "admin"
    assert (await whoami(api, token))[0] == 401
    answer = await api.post("/_keystile/login", allow_redirects=False,
                            data={"username": "alice", "password": PASSWORD})  # fmt: skip
    assert answer.status == 401 and "disabled" in await answer.text()
    await call(api, "PATCH", f"/users/{user_id}", 200, json={"disabled": False})
    assert (await whoami(api, await sign_in(api)))[0] == 200


async def test_odd_sign_in_bodies_get_a_page_not_a_500(api: TestClient) -> None:
    form = "application/x-www-form-urlencoded"
    for kind, body in (
        (form, b"username=%ff%fe&password=x"),
        (form + "; charset=x-bogus", b"username=a&password=b"),
        (form + "; charset=utf-16", "username=a".encode("utf-16")),
        ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data"),
        ("text/plain", b"username=a&password=b"),
        (form, b"username=" + b"a" * 20000),
        (form, b"&".join(b"f%d=1" % i for i in range(100))),
    ):
        answer = await api.post("/_keystile/login", data=body, headers={"Content-Type": kind},
                                allow_redirects=False)  # fmt: skip
        assert 400 <= answer.status < 500, (kind, body[:40], answer.status)
        assert "Traceback" not in await answer.text()


async def test_bad_user_fields_are_422(api: TestClient) -> None:
    user_id = await make_alice(api)
    for body in ({"role": "root"}, {"email": "not-an-email"}, {"password": "nope-not-here"}):
        await call(api, "PATCH", f"/users/{user_id}", 422, json=body)
    await call(api, "DELETE", "/sessions/ses_nope", 404)
    await call(api, "GET", "/users/user_nope/sessions", 404)
