"""The bounds of every value keystile takes from a person or a client, in one place.

Each bound is written once, here, and used twice:

- as a JSON Schema fragment, from which :mod:`keystile.admin.openapi` builds the
  admin API's request bodies and parameters; the API validates every request
  against the very document it serves (:mod:`keystile.admin.validation`);
- by the ``check_*`` functions, which the service layer runs on every change,
  whether it comes from the CLI or the API.

What JSON Schema cannot say (an address in a string, a duration's total, an
instant relative to now, an opaque cursor) is a named ``format`` whose checker
is in :data:`FORMATS`; the served document names the format and the API asserts
it, so that a value is accepted by the API exactly when it is valid against the
document with these formats.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from keystile.core.clientip import parse_address
from keystile.core.durations import (
    DURATION_PATTERN,
    LIFETIME_PATTERN,
    MAX_DURATION,
    MAX_INSTANT_LENGTH,
    format_instant,
    parse_duration,
    parse_instant,
)
from keystile.core.emails import DESCRIPTION as EMAIL_DESCRIPTION
from keystile.core.emails import MAX_EMAIL, parse_email
from keystile.core.errors import InvalidInput
from keystile.core.numbers import MAX_LIMIT as MAX_LIMIT  # re-exported: the bounds live there
from keystile.core.numbers import MAX_PAGE as MAX_PAGE
from keystile.store.keys import decode_cursor

# -- text ---------------------------------------------------------------------------------
MAX_TEXT = 200  # names, owners, external ids, filters, idempotency keys
MAX_ID = 64  # ids of keys, users, teams and groups
# control characters (C0, DEL, C1), line and paragraph separators, bidi controls: none
# of them belongs in a name, and each can disguise what a terminal or a log shows
_CONTROL = r"\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
# what counts as blank around a name (stripped) and cannot be all of it
SPACES = " \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
         "\u202f\u205f\u3000\ufeff"  # fmt: skip
_SPACE_CLASS = r" \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\ufeff"
TEXT_PATTERN = rf"^[^{_CONTROL}]*[^{_CONTROL}{_SPACE_CLASS}][^{_CONTROL}]*$"
PLAIN_PATTERN = rf"^[^{_CONTROL}]*$"  # may be empty or blank, but holds no control character
# an address's rules are keystile.emails' (a format: a pattern cannot say "no look-alikes")
EMAIL = {"type": "string", "maxLength": MAX_EMAIL, "format": "keystile-email",
         "description": EMAIL_DESCRIPTION}  # fmt: skip
_TEXT_RE = re.compile(TEXT_PATTERN)
_PLAIN_RE = re.compile(PLAIN_PATTERN)

# -- scopes and group names ---------------------------------------------------------------
SCOPE_PATTERN = "^[a-z0-9*][a-z0-9:._*-]{0,63}$"
MAX_SCOPES = 64
GROUP_NAME_PATTERN = "^[a-z0-9][a-z0-9_.-]{0,63}$"
_SCOPE_RE = re.compile(SCOPE_PATTERN)
_LIFETIME_RE = re.compile(LIFETIME_PATTERN)
_GROUP_NAME_RE = re.compile(GROUP_NAME_PATTERN)

# -- limits -------------------------------------------------------------------------------
LIMIT_NAMES = ("per_second", "per_minute", "per_hour", "per_day", "quota_day", "quota_month",
               "tokens_per_minute", "tokens_per_day", "tokens_per_month")  # fmt: skip

# -- allowlists ---------------------------------------------------------------------------
MAX_NETWORKS = 64
MAX_NETWORK_LENGTH = 64  # the longest IPv6 CIDR is 49 characters

# -- metadata -----------------------------------------------------------------------------
MAX_METADATA_ENTRIES = 50
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 500
MAX_METADATA_NUMBER = 2**53  # beyond this a JSON number loses integer precision

# -- pages, explain -----------------------------------------------------------------------
MAX_SEQ = 2**63 - 1
MAX_URL = 8192
METHOD_PATTERN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$"  # an HTTP token
_METHOD_RE = re.compile(METHOD_PATTERN)


# -- format checkers: each returns the parsed value or raises ValueError naming the text ---
def _show(text: str) -> str:
    return repr(text) if len(text) <= 80 else f"{text[:80]!r}... ({len(text)} characters)"


def duration(text: str) -> float:
    """A duration from 0 to 100 years (a rotation's grace)."""
    return parse_duration(text)


def lifetime(text: str) -> float:
    """A duration longer than 0 and at most 100 years (a key's expires_in)."""
    seconds = parse_duration(text)
    if not _LIFETIME_RE.fullmatch(text):
        raise ValueError(f"{text!r} must be longer than 0, e.g. 30d")
    return seconds


def instant(text: str) -> float:
    """An ISO-8601 date or date-time (a usage report's start)."""
    return parse_instant(text)


def expiry(text: str) -> float:
    """An ISO-8601 instant after now and at most 100 years ahead."""
    seconds = parse_instant(text)
    problem = _expiry_problem(seconds, time.time())
    if problem:
        raise ValueError(f"{text!r} {problem}")
    return seconds


def network(text: str) -> str:
    """``*`` or an IPv4/IPv6 address or CIDR, normalised (``10.0.0.1/8`` is 10.0.0.0/8)."""
    import ipaddress

    if text == "*":
        return text
    if len(text) > MAX_NETWORK_LENGTH or "%" in text or text != text.strip():
        raise ValueError(f"{_show(text)} is not an IP address or CIDR")
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ValueError(f"{_show(text)} is not an IP address or CIDR") from None


def address(text: str) -> str:
    """An IPv4 or IPv6 address (a client's, for explain)."""
    found = parse_address(text) if len(text) <= MAX_NETWORK_LENGTH else None
    if found is None:
        raise ValueError(f"{_show(text)} is not an IP address")
    return str(found)


def url(text: str) -> str:
    """A path (with query) or an absolute URL with a path, as explain takes it."""
    if not text or len(text) > MAX_URL or not _PLAIN_RE.fullmatch(text):
        raise ValueError(f"{_show(text)} must be 1-{MAX_URL} characters without control "
                         "characters")  # fmt: skip
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError(f"{_show(text)} is not a URL") from None
    if not parts.path.startswith("/"):
        raise ValueError(f"{_show(text)} has no path: give e.g. /v1/chat/completions")
    return text


def method(text: str) -> str:
    """An HTTP method (any token: explain judges what it is given)."""
    if not _METHOD_RE.fullmatch(text):
        raise ValueError(f"{_show(text)} is not an HTTP method")
    return text


def cursor(text: str) -> str:
    """A ``next_cursor`` from an earlier page."""
    try:
        decode_cursor(text)
    except InvalidInput:
        raise ValueError(f"{_show(text)} is not a cursor from a previous page") from None
    return text


def email_address(text: str) -> str:
    """An email address by keystile's rules (:mod:`keystile.emails`), as given."""
    return parse_email(text)


FORMATS: dict[str, Callable[[str], Any]] = {
    "keystile-email": email_address,
    "keystile-duration": duration,
    "keystile-lifetime": lifetime,
    "keystile-instant": instant,
    "keystile-expiry": expiry,
    "keystile-network": network,
    "keystile-address": address,
    "keystile-url": url,
    "keystile-cursor": cursor,
}


def format_predicates() -> dict[str, Callable[[str], bool]]:
    """FORMATS as the yes/no functions a JSON Schema validator takes."""

    def predicate(check: Callable[[str], Any]) -> Callable[[str], bool]:
        def accepts(text: str) -> bool:
            try:
                check(text)
            except ValueError:
                return False
            return True

        return accepts

    return {name: predicate(check) for name, check in FORMATS.items()}


# -- JSON Schema fragments ------------------------------------------------------------------
def text_schema(description: str, most: int = MAX_TEXT) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": most, "pattern": TEXT_PATTERN,
            "description": f"{description}: 1-{most} characters, not blank, no control "
                           "characters (surrounding spaces are dropped)"}  # fmt: skip


TEXT = text_schema("a name")
ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID}
FILTER = {"type": "string", "maxLength": MAX_TEXT, "pattern": PLAIN_PATTERN}
SCOPE = {"type": "string", "pattern": SCOPE_PATTERN,
         "description": "lower-case letters, digits and :._*-; at most 64"}  # fmt: skip
SCOPES = {"type": "array", "maxItems": MAX_SCOPES, "items": SCOPE}
GROUP_NAME = {"type": "string", "pattern": GROUP_NAME_PATTERN,
              "description": "lower-case letters, digits and _.-; at most 64"}  # fmt: skip
CREDENTIAL = {"type": ["string", "null"], "pattern": GROUP_NAME_PATTERN,
              "description": "the name of a configured [credentials.NAME] (never its value); "
                             "null: none"}  # fmt: skip
LIFETIME = {"type": "string", "pattern": LIFETIME_PATTERN, "format": "keystile-lifetime",
            "description": "a duration such as 30d, 12h or 1h30m (units s m h d w); "
                           "longer than 0, at most 100 years (36525d)"}  # fmt: skip
GRACE = {"type": ["string", "number"], "pattern": DURATION_PATTERN,
         "format": "keystile-duration", "minimum": 0, "maximum": MAX_DURATION,
         "description": "a duration such as 24h, or seconds; 0 to 100 years"}  # fmt: skip
EXPIRY = {"type": ["string", "null"], "maxLength": MAX_INSTANT_LENGTH,
          "format": "keystile-expiry",
          "description": "ISO-8601 date or date-time (UTC without a zone), after now and at "
                         "most 100 years ahead; null: never"}  # fmt: skip
INSTANT = {"type": "string", "maxLength": MAX_INSTANT_LENGTH, "format": "keystile-instant",
           "description": "ISO-8601 date or date-time (UTC without a zone)"}  # fmt: skip
NETWORKS = {"type": "array", "maxItems": MAX_NETWORKS,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_NETWORK_LENGTH,
                      "format": "keystile-network",
                      "description": "an IPv4/IPv6 address or CIDR, or * for any"}}  # fmt: skip
LIMITS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {name: {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
                   for name in LIMIT_NAMES},
}  # fmt: skip
METADATA = {
    "type": "object",
    "maxProperties": MAX_METADATA_ENTRIES,
    "propertyNames": {"maxLength": MAX_METADATA_KEY, "pattern": TEXT_PATTERN},
    "additionalProperties": {
        "type": ["string", "number", "boolean", "null"],
        "maxLength": MAX_METADATA_VALUE, "pattern": PLAIN_PATTERN,
        "minimum": -MAX_METADATA_NUMBER, "maximum": MAX_METADATA_NUMBER,
    },
    "description": f"at most {MAX_METADATA_ENTRIES} entries; keys 1-{MAX_METADATA_KEY} "
                   f"characters; values strings of at most {MAX_METADATA_VALUE} characters, "
                   "numbers, booleans or null; no control characters",
}  # fmt: skip
PAGE = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}
SEQ = {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}
METHOD = {"type": "string", "pattern": METHOD_PATTERN}
URL = {"type": "string", "minLength": 1, "maxLength": MAX_URL, "format": "keystile-url"}
ADDRESS = {"type": ["string", "null"], "maxLength": MAX_NETWORK_LENGTH,
           "format": "keystile-address"}  # fmt: skip
CURSOR = {"type": "string", "maxLength": MAX_TEXT, "format": "keystile-cursor"}
# visible ASCII: a header's other bytes do not survive the trip to text and back
IDEMPOTENCY_KEY = {"type": "string", "pattern": f"^[!-~]{{1,{MAX_TEXT}}}$",
                   "description": "1-200 visible ASCII characters, e.g. a UUID"}  # fmt: skip


# -- checks for the service layer (the CLI's and the API's changes) ----------------------------
def check_text(field: str, value: str, most: int = MAX_TEXT) -> str:
    """A name-like text, without its surrounding spaces."""
    if len(value) > most or not _TEXT_RE.fullmatch(value):
        raise InvalidInput(field, f"{_show(value)} must be 1-{most} characters, not blank, "
                                  "without control characters")  # fmt: skip
    return value.strip(SPACES)


def check_role(role: str) -> str:
    from keystile.store.records import ROLES

    if role not in ROLES:
        raise InvalidInput("role", f"{role!r} is not one of {', '.join(ROLES)}")
    return role


def check_email(email: str | None) -> str | None:
    if email is None:
        return None
    try:
        return parse_email(email)
    except ValueError as exc:
        raise InvalidInput("email", str(exc)) from None


def check_name(name: str) -> str:
    return check_text("name", name)


def check_owner(owner: str | None) -> str | None:
    return None if owner is None else check_text("owner", owner)


def check_credential(name: str | None, configured: Collection[str]) -> str | None:
    """A binding to a configured upstream credential, by name (None: unbound)."""
    if name is not None and name not in configured:
        known = ", ".join(sorted(configured)) or "none are configured"
        raise InvalidInput("credential", f"{_show(name)}: no such upstream credential "
                                         f"(configured: {known})")  # fmt: skip
    return name


def check_group_name(name: str) -> str:
    if not _GROUP_NAME_RE.fullmatch(name):
        raise InvalidInput("name", f"{_show(name)}: use lower-case letters, digits and _.- "
                                   "(at most 64)")  # fmt: skip
    return name


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    given = list(scopes)
    if len(given) > MAX_SCOPES:
        raise InvalidInput("scopes", f"{len(given)} scopes: at most {MAX_SCOPES}")
    for scope in given:
        if not _SCOPE_RE.fullmatch(scope):
            raise InvalidInput("scopes", f"{_show(scope)} is not a scope: use lower-case "
                                         "letters, digits and :._*- (at most 64)")  # fmt: skip
    return tuple(sorted(set(given)))


def check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(metadata)
    if len(data) > MAX_METADATA_ENTRIES:
        raise InvalidInput("metadata", f"{len(data)} entries: at most {MAX_METADATA_ENTRIES}")
    for key, value in data.items():
        if not isinstance(key, str) or len(key) > MAX_METADATA_KEY or not _TEXT_RE.fullmatch(key):
            raise InvalidInput(
                "metadata", f"key {_show(str(key))} must be 1-{MAX_METADATA_KEY} characters, "
                "not blank, without control characters")  # fmt: skip
        if not _metadata_value_ok(value):
            raise InvalidInput(
                "metadata", f"{key!r}: {_show_value(value)} must be a string of at most "
                f"{MAX_METADATA_VALUE} characters without control characters, a number of at "
                "most 2**53, a boolean or null")  # fmt: skip
    return data


def _show_value(value: Any) -> str:
    return _show(value) if isinstance(value, str) else repr(value)[:80]


def _metadata_value_ok(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return len(value) <= MAX_METADATA_VALUE and bool(_PLAIN_RE.fullmatch(value))
    if isinstance(value, int | float):
        return math.isfinite(value) and abs(value) <= MAX_METADATA_NUMBER
    return False


def check_allowed_ips(items: Iterable[str] | None) -> tuple[str, ...] | None:
    """CIDRs or addresses, normalised; None or a list holding "*" means any address."""
    if items is None:
        return None
    given = list(items)
    if len(given) > MAX_NETWORKS:
        raise InvalidInput("allowed_ips", f"{len(given)} entries: at most {MAX_NETWORKS}")
    try:
        networks = [network(item) for item in given]
    except ValueError as exc:
        raise InvalidInput("allowed_ips", str(exc)) from None
    return None if "*" in networks else tuple(networks)


def check_limits(limits: Mapping[str, Any]) -> dict[str, int]:
    checked = {}
    for name, value in limits.items():
        if name not in LIMIT_NAMES:
            raise InvalidInput("limits", f"{name!r} is not one of {', '.join(LIMIT_NAMES)}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type: 60.0 is 60
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIMIT:
            raise InvalidInput(
                f"limits.{name}", f"{value!r} must be a whole number from 1 to {MAX_LIMIT}"
            )
        checked[name] = value
    return checked


def check_expiry(expires_at: float | None, now: float) -> float | None:
    """None (never), or an instant after ``now`` and at most 100 years later."""
    if expires_at is None:
        return None
    problem = _expiry_problem(expires_at, now)
    if problem:
        raise InvalidInput("expires_at", f"{format_instant(expires_at)} {problem}")
    return expires_at


def _expiry_problem(expires_at: float, now: float) -> str | None:
    if not expires_at > now:  # also refuses NaN
        return "is in the past"
    if expires_at > now + MAX_DURATION:
        return "is more than 100 years ahead"
    return None


def check_grace(grace: float) -> float:
    if not 0 <= grace <= MAX_DURATION:  # also refuses NaN
        raise InvalidInput("grace", f"{grace!r} must be from 0 to {MAX_DURATION} seconds "
                                    "(100 years)")  # fmt: skip
    return grace
