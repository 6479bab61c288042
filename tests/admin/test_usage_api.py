"""POST /api/v1/usage (token reports) and GET /api/v1/spend, through the whole app:
the reservation comes from a real allow on /auth/nginx."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient

from keystile import config
from keystile.server import make_app
from tests.admin.helpers import ADMIN, call
from tests.backends import BOTH

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL

CONFIG = """
[[routes]]
name = "chat"
path = "/v1/chat/*"
token_estimate = 100
price_per_1k_tokens = 0.5
"""


async def app(aiohttp_client, tmp_path: Path, db_location: Path | str) -> TestClient:  # type: ignore[no-untyped-def]
    toml = tmp_path / "keystile.toml"
    toml.write_text(CONFIG)
    settings = config.load({"KEYSTILE_DB": str(db_location), "KEYSTILE_CONFIG": str(toml),
                            "KEYSTILE_ADMIN_KEY": ADMIN})  # fmt: skip
    return await aiohttp_client(make_app(settings))


async def allow(client: TestClient, key: str) -> tuple[int, str | None]:
    reply = await client.get("/auth/nginx", headers={
        "Authorization": f"Bearer {key}", "X-Original-URI": "/v1/chat/completions",
        "X-Original-Method": "POST"})  # fmt: skip
    return reply.status, reply.headers.get("X-Keystile-Reservation")


async def test_reports_by_reservation_and_by_request_id_are_counted_once(
    aiohttp_client,
    tmp_path: Path,
    db_location: Path | str,  # type: ignore[no-untyped-def]
) -> None:
    client = await app(aiohttp_client, tmp_path, db_location)
    llm = await call(client, "POST", "/keys", 201,
                     json={"name": "llm", "limits": {"tokens_per_day": 1000}})  # fmt: skip
    gateway = await call(client, "POST", "/keys", 201,
                         json={"name": "gw", "scopes": ["usage:write"]})  # fmt: skip
    status, reservation = await allow(client, llm["key"])
    assert status == 200 and reservation and reservation.startswith(llm["id"] + ".")
    body = {
        "reports": [
            {"reservation": reservation, "tokens": 700},
            {"reservation": reservation, "tokens": 700},  # the same again
            {"reservation": "key_x.1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", "tokens": 5},
            {"key_id": llm["id"], "request_id": "gw-1", "tokens": 100},
            {"key_id": llm["id"], "request_id": "gw-1", "tokens": 100},
            {"key_id": "key_nobody", "request_id": "gw-2", "tokens": 1},
        ]
    }
    done = await call(client, "POST", "/usage", 200, key=gateway["key"], json=body)
    assert [r["status"] for r in done["results"]] == [
        "counted", "ignored", "ignored", "counted", "duplicate", "ignored"]  # fmt: skip
    assert (done["counted"], done["duplicate"], done["ignored"]) == (2, 1, 3)
    # 800 spent of 1000: 200 left, one more request (estimate 100) fits, then refused
    assert (await allow(client, llm["key"]))[0] == 200
    assert (await allow(client, llm["key"]))[0] == 200
    headers = {"Authorization": f"Bearer {llm['key']}", "X-Original-URI": "/v1/chat/completions"}
    refused = await client.get("/auth/nginx", headers=headers)
    assert refused.status == 403  # nginx's dialect: 429 travels in X-Keystile-Status
    assert refused.headers["X-Keystile-Status"] == "429"
    assert refused.headers["X-Keystile-Reason"] == "quota_exceeded"
    assert refused.headers["X-Keystile-Detail"] == "tokens_per_day"
    assert "tokens_per_day" in refused.headers["X-Keystile-Message"]
    spent = await call(client, "GET", "/spend", 200)
    assert spent["tokens"] == 800 and spent["tokens_by_key"] == {llm["id"]: 800}
    assert spent["tokens_by_route"] == {"chat": 700, "(no route)": 100}
    assert spent["cost"] == 0.35  # 700 tokens on a route at 0.5 per 1,000
    usage = await call(client, "GET", f"/keys/{llm['id']}/usage", 200)
    assert usage["tokens"] == 800 and usage["allowed"] == 3


async def test_who_may_report_and_what_is_refused(
    aiohttp_client,
    tmp_path: Path,
    db_location: Path | str,  # type: ignore[no-untyped-def]
) -> None:
    client = await app(aiohttp_client, tmp_path, db_location)
    plain = await call(client, "POST", "/keys", 201, json={"name": "p", "scopes": ["chat"]})
    one = {"reports": [{"key_id": plain["id"], "request_id": "r", "tokens": 1}]}
    await call(client, "POST", "/usage", 401, key="ks_nope", json=one)
    denied = await call(client, "POST", "/usage", 403, key=plain["key"], json=one)
    assert "usage:write" in denied["error"]["message"]
    for bad in ({"reports": []}, {"reports": [{"tokens": 1}]},
                {"reports": [{"reservation": "x", "key_id": "k", "request_id": "r", "tokens": 1}]},
                {"reports": [{"key_id": "k", "tokens": 1}]},
                {"reports": [{"reservation": "x", "tokens": -1}]},
                {"reports": [{"reservation": "x", "tokens": 10**12}]},
                {"reports": [{"reservation": "x\\u0000", "tokens": 1}]},
                {"reports": [{"reservation": "x", "tokens": 1}] * 101}):  # fmt: skip
        await call(client, "POST", "/usage", 422, json=bad)
