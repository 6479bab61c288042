"""Every value the admin API takes is bounded at the edge (a 422 naming the field),
and nothing already stored can break a listing."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from keystile.server import STORE
from tests.admin.helpers import call, status_of
from tests.backends import BOTH

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL

CTRL = ["\x00", "\x1b[31m", "\x7f", "\x85", "\u2028", "\u202e"]


def invalid(status: int, body: Any, field: str) -> None:
    assert status == 422, body
    assert body["error"]["code"] == field, body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_in": "591732w"}, "expires_in"),
        ({"expires_in": "5218w"}, "expires_in"),  # just over 100 years
        ({"expires_in": "36526d"}, "expires_in"),
        ({"expires_in": "99999w1d"}, "expires_in"),
        ({"expires_in": "1" * 5000 + "s"}, "expires_in"),
        ({"limits": {"per_minute": True}}, "limits.per_minute"),
        ({"limits": {"per_minute": 10**12 + 1}}, "limits.per_minute"),
        ({"limits": {"per_minute": 10**30}}, "limits.per_minute"),
        ({"limits": {"per_minute": 1.5}}, "limits.per_minute"),
        ({"limits": {"per_minute": "5"}}, "limits.per_minute"),
        ({"limits": {"per_minute": -1}}, "limits.per_minute"),
        ({"limits": {"per_fortnight": 5}}, "limits.per_fortnight"),
        ({"name": "x" * 201}, "name"),
        ({"name": " " * 10 + "x" * 200}, "name"),
        *[({"name": f"a{c}b"}, "name") for c in CTRL],
        ({"owner": "o" * 201}, "owner"),
        ({"owner": "a\nb"}, "owner"),
        ({"scopes": [f"s{n}" for n in range(65)]}, "scopes"),
        ({"scopes": ["a" * 65]}, "scopes"),
        ({"metadata": {f"k{n}": n for n in range(51)}}, "metadata"),
        ({"metadata": {"k" * 65: 1}}, "metadata"),
        ({"metadata": {"k": "v" * 501}}, "metadata"),
        ({"metadata": {"k": {"nested": 1}}}, "metadata"),
        ({"metadata": {"k": [1, 2]}}, "metadata"),
        ({"metadata": {"k": 2**60}}, "metadata"),
        *[({"metadata": {"k": f"a{c}b"}}, "metadata") for c in CTRL],
        *[({"metadata": {f"a{c}b": 1}}, "metadata") for c in CTRL],
        ({"allowed_ips": [f"10.0.{n}.0/24" for n in range(65)]}, "allowed_ips"),
        ({"allowed_ips": ["10.0.0.0/8" + " " * 60]}, "allowed_ips"),
        ({"allowed_ips": ["10.0.0.0/33"]}, "allowed_ips"),
        ({"user_id": "u" * 65}, "user_id"),
    ],
)
async def test_create_refuses_out_of_bounds_values(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    status, answer = await status_of(api, "POST", "/keys", json={"name": "k", **body})
    invalid(status, answer, field)
    assert (await call(api, "GET", "/keys?all=1", 200))["data"] == []  # nothing stored


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_in": "591732w"}, "expires_in"),
        ({"expires_at": "9999-12-31T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2200-01-01"}, "expires_at"),
        ({"expires_at": "1969-12-31T23:59:59Z"}, "expires_at"),
        ({"expires_at": "0001-01-01"}, "expires_at"),
        ({"expires_at": "2030-01-01" + "0" * 100}, "expires_at"),
        ({"enabled": 1}, "enabled"),
        ({"name": "x\ty"}, "name"),
    ],
)
async def test_update_refuses_out_of_bounds_values(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    key = await call(api, "POST", "/keys", 201, json={"name": "k"})
    invalid(*await status_of(api, "PATCH", f"/keys/{key['id']}", json=body), field)
    assert (await call(api, "GET", f"/keys/{key['id']}", 200))["expires_at"] is None


async def test_the_largest_values_inside_the_bounds_are_taken(api: TestClient) -> None:
    body = {"name": "x" * 200, "owner": "o" * 200, "expires_in": "5217w",
            "scopes": [f"s{n}" for n in range(64)],
            "metadata": {f"{n:064d}": "v" * 500 for n in range(50)},
            "allowed_ips": [f"10.0.{n}.0/24" for n in range(64)],
            "limits": {"per_minute": 10**12}}  # fmt: skip
    key = await call(api, "POST", "/keys", 201, json=body)
    assert int(key["expires_at"][:4]) - int(key["created_at"][:4]) in (99, 100)
    assert len((await call(api, "GET", "/keys", 200))["data"]) == 1


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("POST", "/keys/{id}/rotate", {"json": {"grace": "591732w"}}, "grace"),
        ("POST", "/keys/{id}/rotate", {"json": {"grace": -1}}, "grace"),
        ("POST", "/keys/{id}/rotate", {"json": {"grace": 1e300}}, "grace"),
        ("POST", "/keys/{id}/rotate", {"json": {"grace": True}}, "grace"),
        ("POST", "/keys/{id}/rotate", {"headers": {"Idempotency-Key": "i" * 201}},
         "Idempotency-Key"),
        ("GET", "/keys/{id}/usage?since=99999-01-01", {}, "since"),
        ("GET", "/keys/{id}/usage?since=" + "2020-01-01" * 10, {}, "since"),
        ("GET", "/keys?q=" + "q" * 201, {}, "q"),
        ("GET", "/keys?owner=" + "o" * 201, {}, "owner"),
        ("GET", "/keys?limit=1001", {}, "limit"),
        ("GET", "/keys?limit=1e3", {}, "limit"),
        ("GET", "/keys?all=yes", {}, "all"),
        ("GET", "/audit?after=9223372036854775808", {}, "after"),
        ("GET", "/audit?limit=-1", {}, "limit"),
        ("GET", "/audit?actor=" + "a" * 201, {}, "actor"),
        ("POST", "/explain", {"json": {"key_id": "{id}", "url": "/" + "u" * 8192}}, "url"),
        ("POST", "/explain", {"json": {"key_id": "{id}", "url": "/x", "method": "G T"}},
         "method"),
        ("POST", "/explain", {"json": {"key_id": "{id}", "url": "/x", "client_ip": "x" * 100}},
         "client_ip"),
        ("POST", "/teams", {"json": {"name": "t" * 201}}, "name"),
        ("POST", "/teams", {"json": {"name": "t", "limits": {"quota_day": 0}}},
         "limits.quota_day"),
        ("POST", "/teams", {"json": {"name": "t", "allowed_ips": ["*"] * 65}}, "allowed_ips"),
        ("POST", "/users", {"json": {"external_id": "a\x1bb"}}, "external_id"),
        ("POST", "/users", {"json": {"external_id": "kim", "email": "\u212aim@example.com"}},
         "email"),
        ("POST", "/users", {"json": {"external_id": "ana", "email": "a@evil.com@example.com"}},
         "email"),
        ("POST", "/groups", {"json": {"name": "g", "scopes": ["s"] * 65}}, "scopes"),
    ],
)  # fmt: skip
async def test_other_endpoints_refuse_out_of_bounds_values(
    api: TestClient, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    key = await call(api, "POST", "/keys", 201, json={"name": "k"})
    if "json" in kwargs and "key_id" in kwargs["json"]:
        kwargs = {"json": {**kwargs["json"], "key_id": key["id"]}}
    invalid(*await status_of(api, method, path.replace("{id}", key["id"]), **kwargs), field)


async def test_a_refused_far_future_expiry_leaves_every_listing_working(
    api: TestClient,
) -> None:
    status, _ = await status_of(api, "POST", "/keys", json={"name": "far", "expires_in": "591732w"})
    assert status == 422
    await call(api, "POST", "/keys", 201, json={"name": "near", "expires_in": "1d"})
    names = [k["name"] for k in (await call(api, "GET", "/keys?all=1", 200))["data"]]
    assert names == ["near"]


@pytest.mark.parametrize("stored", [1e13, -1e13, 1e300, float("inf"), float("-inf")])
async def test_stored_out_of_range_instants_never_break_a_listing(
    api: TestClient, stored: float
) -> None:
    """A store written by an older keystile (or by hand) may hold any number."""
    key = await call(api, "POST", "/keys", 201, json={"name": "odd"})
    async with api.server.app[STORE]._transaction("by hand") as conn:
        await conn.execute("UPDATE keys SET expires_at = ?, last_used_at = ?, revoked_at = ? "
                           "WHERE id = ?", (stored, stored, stored, key["id"]))  # fmt: skip
    listed = await call(api, "GET", "/keys?all=1", 200)
    (entry,) = listed["data"]
    assert entry["expires_at"] in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z")
    shown = await call(api, "GET", f"/keys/{key['id']}", 200)
    assert shown["last_used_at"] == entry["last_used_at"]
    await call(api, "GET", f"/keys/{key['id']}/usage", 200)
    await call(api, "GET", "/audit", 200)
