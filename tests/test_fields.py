"""The service layer's checks (what the CLI goes through) accept exactly what the
admin API's schema fragments accept: one set of bounds for both."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import pytest

from keystile.core.durations import format_instant, parse_instant
from keystile.core.errors import InvalidInput
from keystile.manage import fields

TEXTS = ["", " ", "\u00a0", "x", " x ", "x" * 200, "x" * 201, " " * 3 + "x" * 198, "a\x00b",
         "a\x7fb", "a\x9fb", "a\u2028b", "a\u2066b", "\u00e9\u4e2d", "a\tb", "\ufeff"]  # fmt: skip
NOW = time.time()
YEAR = 365.25 * 86400


def _expiry(text: str) -> Any:
    return fields.check_expiry(parse_instant(text), time.time())


CASES: list[tuple[str, dict[str, Any], Callable[[Any], Any], list[Any]]] = [
    ("text", fields.TEXT, lambda v: fields.check_text("name", v), TEXTS),
    ("scopes", fields.SCOPES, fields.check_scopes,
     [[], ["a"], ["A"], ["a" * 64], ["a" * 65], ["*"], ["a b"], ["s"] * 64, ["s"] * 65, [""]]),
    ("group", fields.GROUP_NAME, fields.check_group_name,
     ["g", "G", "-g", "g-", "a" * 64, "a" * 65, "", "a.b_c-d"]),
    ("metadata", fields.METADATA, fields.check_metadata,
     [{}, {"k": "v"}, {"k": "v" * 500}, {"k": "v" * 501}, {"": "v"}, {" ": "v"},
      {"k" * 64: 1}, {"k" * 65: 1}, {"k": "a\nb"}, {f"k{n}": n for n in range(50)},
      {f"k{n}": n for n in range(51)}, {"k": 2**53}, {"k": -(2**53) - 1}, {"k": [1]}]),
    ("networks", fields.NETWORKS, fields.check_allowed_ips,
     [[], ["*"], ["10.0.0.0/8"], ["10.0.0.1/8"], [""], [" "], ["10.0.0.0/33"], ["::/0"],
      ["fe80::1%eth0"], ["1.2.3.4 "], [f"10.0.{n}.0/24" for n in range(64)],
      [f"10.0.{n}.0/24" for n in range(65)]]),
    ("limits", fields.LIMITS, fields.check_limits,
     [{}, {"per_minute": 1}, {"per_minute": 0}, {"per_minute": 10**12},
      {"per_minute": 10**12 + 1}, {"per_minute": True}, {"per_minute": 60.0},
      {"per_minute": 1.5}, {"nope": 1}]),
    ("lifetime", fields.LIFETIME, fields.lifetime,
     ["1h", "1H", "0", "0s", "30d", "1h30m", "01h", "5217w", "5218w", "36525d", "36526d",
      "1d1d1d1d1d", "1d1d1d1d1d1d", " 1h", "1h ", "1.5h", "", "9999999s", "999999w"]),
    ("grace", {**fields.GRACE, "type": "string"}, fields.duration,
     ["0", "0s", "1h", "5217w", "5218w", "-1h", "1M"]),
    ("email", fields.EMAIL, fields.check_email,
     ["a@b.co", "Kim@Example.COM", "Kim@example.com".replace("K", "\u212a"), "an\u00e4@b.co",
      "ana@evil.com@example.com", '"ana"@example.com', "a b@c.de", "a@b", "a@1.2.3.4",
      "ana@example.com\n", "a" * 64 + "@b.co", "a" * 65 + "@b.co",
      "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 57,
      "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 58, ""]),
    ("expiry", fields.EXPIRY, _expiry,
     [format_instant(NOW + 3600), format_instant(NOW - 3600), format_instant(NOW + 99 * YEAR),
      format_instant(NOW + 101 * YEAR), "9999-12-31", "1969-12-31", "0001-01-01", "garbage",
      format_instant(NOW + 3600) + " ", "x" * 65]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "schema", "check", "values"), CASES, ids=[c[0] for c in CASES])
def test_the_cli_checks_and_the_api_schema_agree(
    name: str, schema: dict[str, Any], check: Callable[[Any], Any], values: list[Any]
) -> None:
    validator = jsonschema_rs.validator_for(
        schema, formats=fields.format_predicates(), validate_formats=True
    )
    for value in values:
        try:
            check(value)
            accepted = True
        except (InvalidInput, ValueError):
            accepted = False
        assert accepted == validator.is_valid(value), (name, value)
