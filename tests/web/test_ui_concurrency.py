"""Overlapping submissions of one UI form: one key made and shown, every other
submission lands on that key's page (never a second key, never a 503)."""

from __future__ import annotations

import asyncio
import re

from aiohttp.test_utils import TestClient

from tests.admin.helpers import call

from .test_ui import KEY_RE, UI, client, person

__all__ = ["client"]  # the fixture, used by name


async def test_overlapping_posts_of_one_create_form_make_one_key(client: TestClient) -> None:
    user_id, cookie = await person(client, "ana")
    form = {"once": "token-x", "name": "laptop", "scope": "chat", "expiry": "30"}

    async def submit() -> tuple[int, str, str]:
        response = await client.post(UI + "/keys/new", data=form, headers={"Cookie": cookie},
                                     allow_redirects=False)  # fmt: skip
        return response.status, response.headers.get("Location", ""), await response.text()

    answers = await asyncio.gather(*(submit() for _ in range(5)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200, 303, 303, 303, 303], answers
    shown = [body for status, _, body in answers if status == 200]
    assert len(set(KEY_RE.findall(shown[0]))) == 1
    key_id = re.search(r"/keys/(key_[0-9A-Za-z]+)", shown[0])[1]  # type: ignore[index]
    assert {where for status, where, _ in answers if status == 303} == {
        f"{UI}/keys/{key_id}?done=already"
    }
    for _, _, body in answers:
        assert "unavailable" not in body.lower()
    mine = await call(client, "GET", f"/keys?user_id={user_id}", 200)
    assert [k["name"] for k in mine["data"]] == ["laptop"]
