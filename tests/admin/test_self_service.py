"""A self-service key (scope keys:self) never produces a key that may do more than
itself: no looser limit, wider allowlist, extra scope or later expiry, by any
endpoint it can reach. Admins are not bounded."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.admin.helpers import call, status_of

# the caller: the test client connects from 127.0.0.1, inside its allowlist
OWN = {"name": "ana self", "owner": "ana", "scopes": ["keys:self", "chat"],
       "limits": {"per_minute": 100, "quota_day": 1000}, "allowed_ips": ["127.0.0.0/8"],
       "expires_in": "30d"}  # fmt: skip
WITHIN = {"name": "child", "scopes": ["chat"], "limits": {"per_minute": 100, "quota_day": 1000},
          "allowed_ips": ["127.0.0.0/8"], "expires_in": "29d"}  # fmt: skip
DROP = object()

# (field, value): each makes a key that may do more than OWN; DROP leaves the field out
LOOSER: list[tuple[str, Any]] = [
    ("limits", {"per_minute": 101, "quota_day": 1000}),
    ("limits", {"per_minute": 100, "quota_day": 1001}),
    ("limits", {"quota_day": 1000}),  # no per_minute: unlimited
    ("limits", {"per_minute": 100, "per_second": 5}),  # no quota_day
    ("limits", DROP),
    ("allowed_ips", ["*"]),
    ("allowed_ips", ["0.0.0.0/0"]),
    ("allowed_ips", ["127.0.0.0/7"]),
    ("allowed_ips", ["10.0.0.0/8"]),
    ("allowed_ips", ["127.0.0.1", "10.1.2.3"]),
    ("allowed_ips", ["::/0"]),
    ("allowed_ips", ["::ffff:127.0.0.1"]),
    ("allowed_ips", DROP),
    ("expires_in", "31d"),
    ("expires_in", DROP),
    ("scopes", ["images"]),
    ("scopes", ["chat", "*"]),
    ("scopes", ["admin"]),
]
# the same loosenings as a PATCH body
PATCH_LOOSER: list[dict[str, Any]] = [
    {"limits": {"per_minute": 101, "quota_day": 1000}},
    {"limits": {"quota_day": 1000}},
    {"limits": {}},
    {"allowed_ips": ["*"]},
    {"allowed_ips": ["0.0.0.0/0"]},
    {"allowed_ips": ["127.0.0.0/7"]},
    {"allowed_ips": ["::/0"]},
    {"expires_at": None},
    {"expires_in": "31d"},
    {"expires_at": "2099-01-01T00:00:00Z"},
    {"scopes": ["chat", "images"]},
    {"scopes": ["*"]},
    {"scopes": ["admin"]},
]
TIGHTER: list[dict[str, Any]] = [
    {"limits": {"per_minute": 1, "quota_day": 10, "per_second": 1}},
    {"allowed_ips": ["127.0.0.1/32"]},
    {"expires_in": "1h"},
    {"scopes": []},
    {"name": "renamed", "metadata": {"a": "b"}, "enabled": False},
]


def looser(field: str, value: Any) -> dict[str, Any]:
    body = dict(WITHIN)
    if value is DROP:
        body.pop(field)
    else:
        body[field] = value
    return body


async def setup(api: TestClient) -> tuple[str, str]:
    """The caller's key and id."""
    own = await call(api, "POST", "/keys", 201, json=OWN)
    return own["key"], own["id"]


async def key_count(api: TestClient) -> int:
    return len((await call(api, "GET", "/keys?all=1", 200))["data"])


def refused(status: int, body: Any) -> None:
    assert status == 403, body
    assert body["error"]["type"] == "permission_error", body


@pytest.mark.parametrize(("field", "value"), LOOSER)
async def test_create_never_makes_a_looser_key(api: TestClient, field: str, value: Any) -> None:
    secret, _ = await setup(api)
    before = await key_count(api)
    status, body = await status_of(api, "POST", "/keys", secret, json=looser(field, value))
    refused(status, body)
    assert field.replace("expires_in", "expires_at") in body["error"]["message"]
    assert await key_count(api) == before  # nothing stored


async def test_create_within_its_own_bounds_works(api: TestClient) -> None:
    secret, _ = await setup(api)
    made = await call(api, "POST", "/keys", 201, key=secret, json=WITHIN)
    assert made["limits"] == WITHIN["limits"] and made["allowed_ips"] == ["127.0.0.0/8"]
    for body in TIGHTER[:-1]:
        status, answer = await status_of(api, "POST", "/keys", secret, json={**WITHIN, **body})
        assert status == 201, (body, answer)


@pytest.mark.parametrize("body", PATCH_LOOSER)
@pytest.mark.parametrize("target", ["itself", "child"])
async def test_patch_never_loosens_its_own_or_another_owned_key(
    api: TestClient, target: str, body: dict[str, Any]
) -> None:
    secret, own_id = await setup(api)
    key_id = own_id
    if target == "child":
        key_id = (await call(api, "POST", "/keys", 201, key=secret, json=WITHIN))["id"]
    before = await call(api, "GET", f"/keys/{key_id}", 200)
    status, answer = await status_of(api, "PATCH", f"/keys/{key_id}", secret, json=body)
    refused(status, answer)
    after = await call(api, "GET", f"/keys/{key_id}", 200)
    for name in ("limits", "allowed_ips", "expires_at", "scopes", "granted_scopes"):
        assert after[name] == before[name], name


@pytest.mark.parametrize("body", TIGHTER)
async def test_patch_may_tighten_its_own_key(api: TestClient, body: dict[str, Any]) -> None:
    secret, own_id = await setup(api)
    await call(api, "PATCH", f"/keys/{own_id}", 200, key=secret, json=body)


async def test_a_key_an_admin_made_looser_may_be_tightened_but_not_rotated_or_widened(
    api: TestClient,
) -> None:
    """An admin may give the same owner a key with more rights: a self-service key may
    rename, disable or tighten it, but not hand out a new copy of it (rotate), nor widen
    it, nor turn it back on once off."""
    secret, _ = await setup(api)
    loose = await call(api, "POST", "/keys", 201,
                       json={"name": "admin made", "owner": "ana", "scopes": ["chat"],
                             "allowed_ips": ["127.0.0.1/32"]})  # fmt: skip
    path = f"/keys/{loose['id']}"
    await call(api, "PATCH", path, 200, key=secret, json={"name": "renamed"})
    await call(api, "PATCH", path, 200, key=secret, json={"limits": {"per_minute": 500}})
    refused(*await status_of(api, "PATCH", path, secret, json={"allowed_ips": ["127.0.0.0/8"]}))
    refused(*await status_of(api, "POST", path + "/rotate", secret, json={"grace": "1h"}))
    await call(api, "PATCH", path, 200, key=secret, json={"enabled": False})
    refused(*await status_of(api, "PATCH", path, secret, json={"enabled": True}))
    await call(api, "POST", path + "/revoke", 200, key=secret)
    shown = await call(api, "GET", path, 200)
    assert shown["allowed_ips"] == ["127.0.0.1/32"] and shown["replaced_by"] is None


async def test_rotate_copies_settings_only_within_its_own_bounds(api: TestClient) -> None:
    secret, own_id = await setup(api)
    child = await call(api, "POST", "/keys", 201, key=secret, json=WITHIN)
    rotated = await call(api, "POST", f"/keys/{child['id']}/rotate", 201, key=secret, json={})
    new = rotated["new"]
    assert (new["limits"], new["allowed_ips"]) == (child["limits"], child["allowed_ips"])
    assert new["expires_at"] == child["expires_at"]
    itself = await call(api, "POST", f"/keys/{own_id}/rotate", 201, key=secret,
                        json={"grace": "1m"})  # fmt: skip
    assert itself["new"]["limits"] == OWN["limits"]


async def test_a_key_in_a_group_is_bounded_by_what_the_group_grants_too(
    api: TestClient,
) -> None:
    """Rotating a key that a group gives more scopes hands those scopes out again."""
    secret, _ = await setup(api)
    grouped = await call(api, "POST", "/keys", 201, key=secret, json=WITHIN)
    group = await call(api, "POST", "/groups", 201, json={"name": "art", "scopes": ["images"]})
    await call(api, "PUT", f"/groups/{group['id']}/keys/{grouped['id']}", 200)
    refused(*await status_of(api, "POST", f"/keys/{grouped['id']}/rotate", secret, json={}))
    refused(*await status_of(api, "PATCH", f"/keys/{grouped['id']}", secret,
                             json={"scopes": ["chat", "memory"]}))  # fmt: skip
    # what the group grants the caller itself, it may grant
    own = await call(api, "POST", "/keys", 201,
                     json={**OWN, "name": "artist self", "owner": "art"})  # fmt: skip
    await call(api, "PUT", f"/groups/{group['id']}/keys/{own['id']}", 200)
    await call(api, "POST", "/keys", 201, key=own["key"], json={**WITHIN, "scopes": ["images"]})


async def test_team_limits_bind_the_new_key_as_they_bind_the_caller(api: TestClient) -> None:
    """A self-service key's new keys belong to its own user, so to its team: the team's
    limits and allowlist apply to them as to the caller. Key-level limits are compared
    key to key."""
    team = await call(api, "POST", "/teams", 201,
                      json={"name": "ml", "limits": {"per_minute": 60},
                            "allowed_ips": ["127.0.0.0/8"]})  # fmt: skip
    user = await call(api, "POST", "/users", 201,
                      json={"external_id": "ana@example.com", "team_id": team["id"]})  # fmt: skip
    own = await call(api, "POST", "/keys", 201,
                     json={"name": "self", "user_id": user["id"],
                           "scopes": ["keys:self"]})  # fmt: skip
    made = await call(api, "POST", "/keys", 201, key=own["key"], json={"name": "no key limits"})
    shown = await call(api, "GET", f"/keys/{made['id']}", 200)
    assert shown["user_id"] == user["id"] and shown["team_id"] == team["id"]


async def test_admins_are_not_bounded(api: TestClient) -> None:
    ops = await call(api, "POST", "/keys", 201,
                     json={**OWN, "name": "ops", "scopes": ["admin"]})  # fmt: skip
    made = await call(api, "POST", "/keys", 201, key=ops["key"],
                      json={"name": "big", "limits": {"per_minute": 10**6}, "allowed_ips": ["*"],
                            "scopes": ["images"]})  # fmt: skip
    assert made["allowed_ips"] is None
    await call(api, "PATCH", f"/keys/{ops['id']}", 200, key=ops["key"], json={"limits": {}})


async def test_self_service_reaches_no_group_team_user_or_audit_endpoint(api: TestClient) -> None:
    secret, own_id = await setup(api)
    group = await call(api, "POST", "/groups", 201, json={"name": "g", "scopes": ["images"]})
    team = await call(api, "POST", "/teams", 201, json={"name": "t"})
    for method, path, body in (
        ("PUT", f"/groups/{group['id']}/keys/{own_id}", None),
        ("DELETE", f"/groups/{group['id']}/keys/{own_id}", None),
        ("PATCH", f"/groups/{group['id']}", {"scopes": ["images"]}),
        ("POST", "/groups", {"name": "mine"}),
        ("PATCH", f"/teams/{team['id']}", {"limits": {}}),
        ("POST", "/teams", {"name": "mine"}),
        ("POST", "/users", {"external_id": "me"}),
        ("GET", "/audit", None),
    ):
        status, answer = await status_of(api, method, path, secret, json=body)
        refused(status, answer)


# (what the admin did, the owner's edit that would bring the key back)
REVIVALS = [
    ("expire", {"expires_in": "1d"}),
    ("expire", {"expires_at": None}),
    ("expire", {"name": "renamed", "scopes": ["chat"], "expires_in": "29d"}),
    ("disable", {"enabled": True}),
    ("disable", {"enabled": True, "name": "x"}),
    ("revoke", {"enabled": True, "expires_in": "1d"}),
]


@pytest.mark.parametrize(("done", "edit"), REVIVALS)
async def test_an_owner_never_revives_a_key_an_admin_stopped(
    api: TestClient, done: str, edit: dict[str, Any]
) -> None:
    """State goes only where the transition table lets the role take it: an admin
    expires (disables, revokes) a key; its owner's edit leaves it stopped."""
    secret, _ = await setup(api)
    child = await call(api, "POST", "/keys", 201, key=secret, json=WITHIN)
    if done == "disable":
        await call(api, "PATCH", f"/keys/{child['id']}", 200, json={"enabled": False})
    else:
        await call(api, "POST", f"/keys/{child['id']}/{done}", 200)
    status, answer = await status_of(api, "PATCH", f"/keys/{child['id']}", secret, json=edit)
    after = await call(api, "GET", f"/keys/{child['id']}", 200)
    assert after["state"] != "active", (status, answer, after)
    if status != 200:  # a revoked key stays revoked whatever is edited
        refused(status, answer)
    # the admin may bring an expired or disabled key back
    if done != "revoke":
        await call(api, "PATCH", f"/keys/{child['id']}", 200,
                   json={"enabled": True, "expires_in": "1d"})  # fmt: skip
        assert (await call(api, "GET", f"/keys/{child['id']}", 200))["state"] == "active"


def test_the_transition_table() -> None:
    """Who may take a key from which state to which: one table (model.TRANSITIONS)."""
    from keystile.core.model import ADMIN_ROLE, OWNER_ROLE, STATES, may_change_state

    for before in STATES:
        for after in STATES:
            admin, owner = (
                may_change_state(ADMIN_ROLE, before, after),
                may_change_state(OWNER_ROLE, before, after),
            )
            if before == after:
                assert admin and owner
            elif before in ("revoked", "deleted") and after != "deleted":
                assert not admin and not owner, (before, after)  # final
            elif after == "active":
                assert admin and not owner, (before, after)  # only an admin revives
            elif after in ("disabled", "expired", "revoked", "deleted"):
                assert (owner and admin) or before == "deleted", (before, after)
