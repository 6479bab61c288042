"""The served OpenAPI document and the API agree on what is valid: for a table of
edge values, a request is refused with a 422 exactly when it is invalid against
/api/v1/openapi.json (with the document's named formats asserted)."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime
from typing import Any

import jsonschema_rs
from aiohttp.test_utils import TestClient

from keystile.admin import PREFIX
from keystile.manage.fields import format_predicates
from tests.admin.helpers import call, status_of

YEAR = datetime.now(UTC).year
FUTURE, PAST = f"{YEAR + 1}-01-01T00:00:00Z", f"{YEAR - 1}-01-01T00:00:00Z"
NEAR_CAP, FAR = f"{YEAR + 99}-01-01", f"{YEAR + 101}-01-01"
MAX_GRACE = 36525 * 86400
CURSOR = base64.urlsafe_b64encode(b"1.0|key_x").decode()
NETS = [f"10.{n}.0.0/16" for n in range(65)]

NAMES = ["", " ", "\u00a0", "\u3000x", " x ", "x" * 200, "x" * 201, " " * 5 + "x" * 196,
         "a\u0085b", "a\tb", "a\u2028b", "a\u202eb", "\u00e9" * 200, None, 5]  # fmt: skip
EXPIRIES: list[dict[str, Any]] = [
    {"expires_at": FUTURE}, {"expires_at": PAST}, {"expires_at": None},
    {"expires_at": f"{YEAR + 1}-06-01"}, {"expires_at": NEAR_CAP}, {"expires_at": FAR},
    {"expires_at": "9999-12-31"}, {"expires_at": "garbage"}, {"expires_at": 1893456000},
    {"expires_at": FUTURE.replace("Z", "z")}, {"expires_at": FUTURE.replace("Z", "+14:00")},
    {"expires_at": " " + FUTURE}, {"expires_at": FUTURE + "0" * 60},
    *[{"expires_in": d} for d in ("1h", "1H", "30D", "0", "0s", "1h0m", "01h", "5217w", "5218w",
                                  "36525d", "36526d", "1h1h", "1d2d3d4d5d", "1d2d3d4d5d6d",
                                  " 1h", "1h ", "1.5h", "", "999999w", 3600, None)],
    {"expires_at": FUTURE, "expires_in": "1h"},
]  # fmt: skip
METADATA: list[Any] = [
    {f"k{n}": n for n in range(50)}, {f"k{n}": n for n in range(51)}, {"": 1}, {" ": 1},
    {" k": 1}, {"k\n": 1}, {"k" * 64: 1}, {"k" * 65: 1}, {"k": None}, {"k": True}, {"k": 1.5},
    {"k": 2**53}, {"k": 2**53 + 1}, {"k": -(2**53)}, {"k": ""}, {"k": " "}, {"k": "v" * 500},
    {"k": "v" * 501}, {"k": "a\x1bb"}, {"k": {}}, {"k": []}, [], None, "k=v",
]  # fmt: skip
ALLOWED_IPS: list[Any] = [
    [""], [" "], ["*"], ["*", "10.0.0.0/8"], ["10.0.0.1/8"], ["10.0.0.0/33"], ["::1"],
    ["fe80::1%eth0"], ["10.0.0.1/255.0.0.0"], ["10.0.0.0/8 "], [" 10.0.0.0/8"], ["010.0.0.1"],
    ["x" * 65], [], None, NETS[:64], NETS, [5], "10.0.0.0/8",
]  # fmt: skip
LIMITS: list[Any] = [
    {"per_minute": 60}, {"per_minute": 60.0}, {"per_minute": 0}, {"per_minute": 1},
    {"per_minute": 10**12}, {"per_minute": 10**12 + 1}, {"per_minute": True},
    {"per_minute": "60"}, {"per_minute": None}, {"per_minute": 1.5}, {"per_minute": -1}, {},
    {"bogus": 1}, {"quota_month": 10**30}, None, [],
]  # fmt: skip
SCOPES: list[Any] = [
    [], ["chat"], ["chat", "chat"], ["Chat"], ["*"], ["a" * 64], ["a" * 65], ["keys:self"],
    [""], [f"s{n}" for n in range(64)], [f"s{n}" for n in range(65)], None, "chat", [1],
]  # fmt: skip
OWNERS: list[Any] = ["o", "", " ", "o" * 200, "o" * 201, "a\nb", None, 5]

# (method, path, body or None, query or None); {key}, {team}, {group} are made fresh
CASES: list[tuple[str, str, Any, dict[str, str] | None]] = [
    *[("POST", "/keys", {"name": n}, None) for n in NAMES],
    ("POST", "/keys", {}, None),
    ("POST", "/keys", {"name": "k", "colour": "red"}, None),
    *[("POST", "/keys", {"name": "k", **e}, None) for e in EXPIRIES],
    *[("POST", "/keys", {"name": "k", "metadata": m}, None) for m in METADATA],
    *[("POST", "/keys", {"name": "k", "allowed_ips": a}, None) for a in ALLOWED_IPS],
    *[("POST", "/keys", {"name": "k", "limits": lim}, None) for lim in LIMITS],
    *[("POST", "/keys", {"name": "k", "scopes": s}, None) for s in SCOPES],
    *[("POST", "/keys", {"name": "k", "owner": o}, None) for o in OWNERS],
    ("POST", "/keys", {"name": "k", "user_id": "user_missing"}, None),
    ("POST", "/keys", {"name": "k", "user_id": "u" * 65}, None),
    ("POST", "/keys", {"name": "k", "enabled": False}, None),
    *[("PATCH", "/keys/{key}", {"name": n}, None) for n in NAMES],
    *[("PATCH", "/keys/{key}", e, None) for e in EXPIRIES],
    *[("PATCH", "/keys/{key}", {"metadata": m}, None) for m in METADATA],
    *[("PATCH", "/keys/{key}", {"allowed_ips": a}, None) for a in ALLOWED_IPS],
    *[("PATCH", "/keys/{key}", {"limits": lim}, None) for lim in LIMITS],
    *[("PATCH", "/keys/{key}", {"scopes": s}, None) for s in SCOPES],
    *[("PATCH", "/keys/{key}", {"enabled": v}, None) for v in (True, False, 1, None, "true")],
    ("PATCH", "/keys/{key}", {}, None),
    ("PATCH", "/keys/{key}", {"owner": "o"}, None),
    *[("POST", "/keys/{key}/rotate", {"grace": g}, None)
      for g in (0, "0", "1h", "0s", -1, 1.5, "1.5", MAX_GRACE, MAX_GRACE + 1, "5217w", "5218w",
                True, None, "1H", 1e300)],
    ("POST", "/keys/{key}/rotate", {}, None),
    *[("POST", "/explain", {"key_id": "{key}", "url": u}, None)
      for u in ("/x", "x", "http://h/x", "http://h", "//h/x", "http://[::1", "/x\n", "", "?a",
                "/" + "u" * 8191, "/" + "u" * 8192, "/a b")],
    *[("POST", "/explain", {"key_id": "{key}", "url": "/x", "method": m}, None)
      for m in ("GET", "get", "G T", "", "M" * 32, "M" * 33, None)],
    *[("POST", "/explain", {"key_id": "{key}", "url": "/x", "client_ip": ip}, None)
      for ip in (None, "1.2.3.4", "[::1]", " 1.2.3.4", "x", "", "::ffff:1.2.3.4", "1.2.3.4/32")],
    ("POST", "/explain", {"url": "/x"}, None),
    ("POST", "/explain", {"key_id": "k" * 65, "url": "/x"}, None),
    *[("POST", "/teams", {"name": n}, None) for n in NAMES],
    *[("POST", "/teams", {"name": "t", "allowed_ips": a}, None) for a in ALLOWED_IPS],
    *[("POST", "/teams", {"name": "t", "limits": lim}, None) for lim in LIMITS],
    *[("PATCH", "/teams/{team}", b, None)
      for b in ({}, {"allowed_ips": None}, {"allowed_ips": [""]}, {"name": ""}, {"name": None})],
    # no [credentials.NAME] configured here: only null is a name the document lists
    *[(method, path, {**extra, "credential": c}, None) for c in (None, "team-z", "", 5)
      for method, path, extra in (("POST", "/keys", {"name": "k"}), ("PATCH", "/keys/{key}", {}),
                                  ("POST", "/teams", {"name": "t"}),
                                  ("PATCH", "/teams/{team}", {}))],
    *[("POST", "/users", {"external_id": n}, None) for n in NAMES],
    ("POST", "/users", {"external_id": "u", "team_id": "team_missing"}, None),
    *[("POST", "/groups", {"name": n}, None)
      for n in ("g-a", "G", "a" * 64, "b" * 65, "-a", "a b", "", None, "ünï")],
    *[("POST", "/groups", {"name": f"s{n}", "scopes": s}, None) for n, s in enumerate(SCOPES)],
    *[("PATCH", "/groups/{group}", b, None)
      for b in ({}, {"name": "renamed"}, {"name": "Bad"}, {"scopes": ["x"] * 65}, {"x": 1})],
    *[("GET", "/keys", None, {"limit": v}) for v in ("1000", "1001", "0", "1", "abc", "", "1e3",
                                                     "+5", " 5", "-1", "9" * 30, "\u00b2",
                                                     "\u0661\u0662", "\uff15")],
    *[("GET", "/keys", None, {"state": v}) for v in ("active", "sleepy", "")],
    *[("GET", "/keys", None, {"all": v}) for v in ("1", "true", "yes", "")],
    *[("GET", "/keys", None, {"cursor": v}) for v in (CURSOR, "%%%", "abc", "c" * 201)],
    *[("GET", "/keys", None, {"q": v}) for v in ("x" * 200, "x" * 201, "a\x01b")],
    *[("GET", "/audit", None, {"after": v})
      for v in ("0", "-1", str(2**63 - 1), str(2**63), "x")],
    *[("GET", "/keys/{key}/usage", None, {"since": v})
      for v in ("2020-01-01", "garbage", "99999-01-01", "2020-01-01T00:00:00Z", "")],
]  # fmt: skip


def _validator(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    if "$ref" in schema:
        schema = components["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return jsonschema_rs.validator_for(schema, formats=format_predicates(), validate_formats=True)


def valid_per_document(doc: dict[str, Any], method: str, path: str, body: Any,
                       query: dict[str, str] | None) -> bool:  # fmt: skip
    for short, name in (("{key}", "{key_id}"), ("{team}", "{team_id}"), ("{group}", "{group_id}")):
        path = path.replace(short, name)
    operation = doc["paths"][PREFIX + path][method.lower()]
    if body is not None:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        if not _validator(schema, doc["components"]).is_valid(body):
            return False
    for param in operation.get("parameters", []):
        value = (query or {}).get(param["name"])
        if param["in"] != "query" or value is None or value == "":  # allowEmptyValue
            continue
        schema = param["schema"]
        # an integer in a query is ASCII digits (keystile.numbers; docs/admin-api.md): no
        # sign, as JSON writes none for a positive number and no parameter takes a negative
        if schema.get("type") == "integer" and re.fullmatch(r"[0-9]+", value):
            value = int(value)  # type: ignore[assignment]
        if not _validator(schema, doc["components"]).is_valid(value):
            return False
    return True


async def fresh(api: TestClient, path: str, body: Any, n: int) -> tuple[str, Any]:
    if "{key}" in path or (isinstance(body, dict) and body.get("key_id") == "{key}"):
        key = await call(api, "POST", "/keys", 201, json={"name": f"target {n}"})
        path = path.replace("{key}", key["id"])
        if isinstance(body, dict) and body.get("key_id") == "{key}":
            body = {**body, "key_id": key["id"]}
    if "{team}" in path:
        team = await call(api, "POST", "/teams", 201, json={"name": f"team {n}"})
        path = path.replace("{team}", team["id"])
    if "{group}" in path:
        group = await call(api, "POST", "/groups", 201, json={"name": f"group-{n}"})
        path = path.replace("{group}", group["id"])
    return path, body


async def test_the_api_refuses_exactly_what_its_document_calls_invalid(api: TestClient) -> None:
    doc = await (await api.get(PREFIX + "/openapi.json")).json()
    disagreements, started = [], time.monotonic()
    for n, (method, template, body, query) in enumerate(CASES):
        path, sent = await fresh(api, template, body, n)
        expected = valid_per_document(doc, method, template, body, query)
        kwargs: dict[str, Any] = {"params": query} if query is not None else {}
        if body is not None:
            kwargs["json"] = sent
        status, answer = await status_of(api, method, path, **kwargs)
        assert status < 500, (method, template, body, query, answer)
        if expected != (status != 422):
            verdict = "valid" if expected else "invalid"
            disagreements.append(f"{method} {template} {body!r:.120} {query}: document says "
                                 f"{verdict}, API {status} {answer}")  # fmt: skip
    assert not disagreements, "\n".join(disagreements)
    assert len(CASES) > 300 and time.monotonic() - started < 120
