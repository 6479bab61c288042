"""Numbers typed into the pages and the admin API: a value that is not plain ASCII digits
in range (``²``, ``³``, Arabic-Indic or full-width digits, signs, exponents) is answered
422 with the field and the value named, never a 503; each door reads a kind of field
with the same parser (keystile.numbers)."""

from __future__ import annotations

import base64
import html

import pytest
from aiohttp.test_utils import TestClient

from keystile.manage.fields import LIMIT_NAMES
from tests.admin.helpers import status_of
from tests.web.test_ui import client, get, person, post  # noqa: F401 - the shared fixture

# digits str.isdigit() takes and int() refuses, digits int() takes that are not ASCII,
# and ASCII that is no whole number in range
NOT_NUMBERS = ["\u00b2", "\u00b3", "1\u00b2", "\u0661\u0662", "\uff17", "\U0001d7d5", "-1",
               "+7", "1e3", "7.0", "0x10", "1_0", "\u2167"]  # fmt: skip
DAYS_OUT_OF_RANGE = ["0", "36526", "9" * 30]


def refused(body: str, field: str, value: str) -> None:
    """The page names the field and shows the value as typed (escaped)."""
    text = html.unescape(body)
    assert field in text, text
    assert repr(value)[:40] in text, text


@pytest.mark.parametrize("value", NOT_NUMBERS + DAYS_OUT_OF_RANGE)
@pytest.mark.parametrize("field", ["expiring", "unused"])
async def test_a_key_list_filter_that_is_not_a_number_of_days_is_a_422(
    client: TestClient,  # noqa: F811
    field: str,
    value: str,
) -> None:
    _, admin = await person(client, "root", "admin")
    _, member = await person(client, "ana")
    for cookie in (admin, member):
        response = await client.get("/_keystile/ui/keys", params={field: value},
                                    headers={"Cookie": cookie})  # fmt: skip
        body = await response.text()
        assert response.status == 422, body
        refused(body, field, value)


@pytest.mark.parametrize("value", ["1", "7", "007", "36525"])
async def test_a_number_of_days_in_range_filters(client: TestClient, value: str) -> None:  # noqa: F811
    _, admin = await person(client, "root", "admin")
    await get(client, f"/keys?expiring={value}&unused={value}", admin)


@pytest.mark.parametrize("value", [*NOT_NUMBERS, "0", str(10**12 + 1)])
async def test_a_limit_that_is_not_a_whole_number_in_range_is_a_422_on_every_form(
    client: TestClient,  # noqa: F811
    value: str,
) -> None:
    user_id, cookie = await person(client, "ana")
    _, admin = await person(client, "root", "admin")
    name = LIMIT_NAMES[1]
    form = {"once": "o", "name": "k", "scope": "chat", f"limit_{name}": value}
    _, body = await post(client, "/keys/new", cookie, form, 422)
    refused(body, f"limits.{name}", value)
    # the edit form of an existing key, and a team's forms
    _, made = await post(client, "/keys/new", cookie, {"once": "p", "name": "k"}, 200)
    key_id = made.split("/keys/key_", 1)[1].split('"', 1)[0].split("?", 1)[0]
    edit = {"name": "k", "expiry": "keep", f"limit_{name}": value}
    _, body = await post(client, f"/keys/key_{key_id}", cookie, edit, 422)
    refused(body, f"limits.{name}", value)
    _, body = await post(client, "/teams", admin, {"name": "t", f"limit_{name}": value}, 422)
    refused(body, f"limits.{name}", value)
    assert user_id


@pytest.mark.parametrize("value", [*NOT_NUMBERS, "0", "8", "31", "365"])
async def test_an_expiry_choice_that_is_not_offered_is_a_422(
    client: TestClient,  # noqa: F811
    value: str,
) -> None:
    _, cookie = await person(client, "ana")
    form = {"once": "o", "name": "k", "scope": "chat", "expiry": value}
    _, body = await post(client, "/keys/new", cookie, form, 422)
    refused(body, "expiry", value)


NOT_DATES = ["\uff12\uff10\uff19\uff19-01-31", "2099-01-\u0663\u0661", "2099-\u00b9\u00b2-31",
             "2099-13-01", "2099-02-30", "2099-01-31x", "2099-01-31T00:00", "20990131"]  # fmt: skip


@pytest.mark.parametrize("value", NOT_DATES)
async def test_an_expiry_date_that_is_not_an_ascii_date_is_a_422(
    client: TestClient,  # noqa: F811
    value: str,
) -> None:
    _, cookie = await person(client, "ana")
    form = {"once": "o", "name": "k", "scope": "chat", "expiry": "date", "expires_on": value}
    _, body = await post(client, "/keys/new", cookie, form, 422)
    refused(body, "expires_on", value)


@pytest.mark.parametrize("value", [*NOT_NUMBERS, "0", "1001"])
async def test_the_admin_api_reads_a_page_size_with_the_same_rule(
    client: TestClient,  # noqa: F811
    value: str,
) -> None:
    status, body = await status_of(client, "GET", "/keys", params={"limit": value})
    assert status == 422, body
    assert body["error"]["code"] == "limit" and repr(value)[:20] in body["error"]["message"]


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "2"])
async def test_the_admin_api_takes_limits_only_as_json_integers(
    client: TestClient,  # noqa: F811
    value: str,
) -> None:
    status, body = await status_of(client, "POST", "/keys",
                                   json={"name": "k", "limits": {"per_minute": value}})  # fmt: skip
    assert status == 422, body
    assert body["error"]["code"] == "limits.per_minute"


def _cursor(created: str) -> str:
    return base64.urlsafe_b64encode(f"{created}|key_x".encode()).decode()


ODD_VALUES = ["\u00b2", "\u00b3", "\u0661\u0662", "\uff17", "-1", "1e3", "\x00", "a\nb", "9" * 300,
              "%", "\ud7ff", _cursor("nan"), _cursor("inf"), _cursor("\u0661\u0662"),
              _cursor("1e400"), _cursor("-1")]  # fmt: skip


@pytest.mark.parametrize("name", ["state", "user", "team", "group", "expiring", "unused", "q",
                                  "cursor"])  # fmt: skip
async def test_no_value_of_any_key_list_filter_is_a_5xx(
    client: TestClient,  # noqa: F811
    name: str,
) -> None:
    _, admin = await person(client, "root", "admin")
    _, member = await person(client, "ana")
    await post(client, "/keys/new", member, {"once": "o", "name": "k"}, 200)
    for cookie in (admin, member):
        for value in ODD_VALUES:
            response = await client.get("/_keystile/ui/keys", params={name: value},
                                        headers={"Cookie": cookie})  # fmt: skip
            assert response.status in (200, 422), (name, value, await response.text())
