"""argparse value types: each error names the value and says what is expected.

The bounds are those of :mod:`keystile.fields`, which the admin API serves and
checks too; what needs the store or the clock (a name, a limit's range, an
expiry) is checked again by the service layer, as for the API.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from typing import Any

from keystile import fields
from keystile.durations import parse_instant

_NUMBER_RE = re.compile(r"[0-9]{1,20}")


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


def bounded_int(least: int, most: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not _NUMBER_RE.fullmatch(text) or not least <= int(text) <= most:
            raise argparse.ArgumentTypeError(
                f"{text[:80]!r} is not a whole number from {least} to {most}"
            )
        return int(text)

    return parse


positive_int = bounded_int(1, 10**6)
page_size = bounded_int(1, fields.MAX_PAGE)


def limit(text: str) -> tuple[str, int]:
    """NAME=N; the name and N's range are checked with the key (fields.check_limits)."""
    name, sep, value = text.partition("=")
    if not sep or not _NUMBER_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not NAME=N, e.g. per_minute=60 (N from 1 to {fields.MAX_LIMIT})"
        )
    return name, int(value)


def text(value: str) -> str:
    """A filter or an id: at most 200 characters, no control characters."""
    if len(value) > fields.MAX_TEXT or not re.fullmatch(fields.PLAIN_PATTERN, value):
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} must be at most {fields.MAX_TEXT} characters without control "
            "characters"
        )
    return value
