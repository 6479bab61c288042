"""argparse value types: each error names the value and says what is expected.

The bounds are those of :mod:`keystile.fields`, which the admin API serves and
checks too, and numbers are read by :mod:`keystile.numbers`, as the pages and the API
read them; what needs the store or the clock (a name, a limit's range, an
expiry) is checked again by the service layer, as for the API.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from typing import Any

from keystile.core import numbers
from keystile.core.durations import parse_instant
from keystile.core.errors import InvalidInput
from keystile.manage import fields


def _checked(check: Callable[[str], Any], text: str) -> Any:
    try:
        return check(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration(text: str) -> float:
    """0 to 100 years, e.g. 24h (a rotation's grace)."""
    return float(_checked(fields.duration, text))


def instant(text: str) -> float:
    return float(_checked(parse_instant, text))


def future_in(text: str) -> float:
    """A duration from now, longer than 0 and at most 100 years, as Unix seconds."""
    return time.time() + float(_checked(fields.lifetime, text))


def pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not KEY=VALUE")
    return key, value


def _number(parse: Callable[[str], int], text: str, given: str | None = None) -> int:
    """A keystile.numbers parser's answer, or argparse's error with its message (argparse
    names the option; ``given``: the whole argument, shown first)."""
    try:
        return parse(text)
    except InvalidInput as exc:
        message = str(exc).split(": ", 1)[1]
        shown = message if given is None else f"{given[:80]!r}: {message}"
        raise argparse.ArgumentTypeError(shown) from None


def bounded_int(least: int, most: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        return _number(lambda t: numbers.whole_number("value", t, least, most), text)

    return parse


positive_int = bounded_int(1, 10**6)


def page_size(text: str) -> int:
    """How many rows a listing shows: the admin API's page size."""
    return _number(lambda t: numbers.page_size("limit", t), text)


def limit(text: str) -> tuple[str, int]:
    """NAME=N, N as the pages and the API read it; the name is checked with the key
    (fields.check_limits)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not NAME=N, e.g. per_minute=60 (N from 1 to {numbers.MAX_LIMIT})"
        )
    return name, _number(lambda t: numbers.limit(name, t), value, text)


def email(text: str) -> str:
    """An email address by keystile's rules (keystile.emails), as given."""
    return str(_checked(fields.email_address, text))


def text(value: str) -> str:
    """A filter or an id: at most 200 characters, no control characters."""
    if len(value) > fields.MAX_TEXT or not re.fullmatch(fields.PLAIN_PATTERN, value):
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} must be at most {fields.MAX_TEXT} characters without control "
            "characters"
        )
    return value
