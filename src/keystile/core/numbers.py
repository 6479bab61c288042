"""Whole numbers as people type them: one parser per kind of field, for every door.

A number is 1-20 ASCII digits and nothing else. Python's own tests disagree about
the rest: ``str.isdigit()`` takes ``²`` and ``³``, which ``int()`` refuses (a
page that checks with one and converts with the other answers 503), and
``int()`` takes Arabic-Indic and full-width digits, spaces, ``+``, ``-`` and
``_``. So nothing here calls either on unchecked text: the ASCII pattern first,
then ``int()`` on what it matched, then the bounds.

Each kind of field has one parser, used by the pages, the admin API and the CLI:

- :func:`limit` - a rate limit or quota (``limits.per_minute``), 1 to 10**12;
- :func:`days` - a number of days (the key list's ``expiring`` and ``unused``), 1 to
  36525 (100 years);
- :func:`page_size` - how many rows a listing returns, 1 to 1000;
- :func:`choice` - one of a few numbers a form offers (the key form's expiry presets).

Each raises :class:`~keystile.errors.InvalidInput` naming the field and showing the
value as typed; the CLI turns that into argparse's error (:mod:`keystile.cli.args`).
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from keystile.core.errors import InvalidInput

MAX_DIGITS = 20  # beyond any bound here; int() of a long digit string is quadratic
MAX_LIMIT = 10**12
MAX_DAYS = 36525  # 100 years of 365.25 days
MAX_PAGE = 1000
# [0-9], not \d: in a str pattern \d is any Unicode decimal digit
_DIGITS_RE = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")


def _show(text: str) -> str:
    return repr(text) if len(text) <= 40 else f"{text[:40]!r}... ({len(text)} characters)"


def digits(text: str) -> int | None:
    """The value of ``text`` when it is 1-20 ASCII digits (leading zeros allowed), else None."""
    return int(text) if _DIGITS_RE.fullmatch(text) else None


def whole_number(field: str, text: str, least: int, most: int) -> int:
    """``text`` as a whole number from ``least`` to ``most``; InvalidInput otherwise."""
    value = digits(text)
    if value is None or not least <= value <= most:
        raise InvalidInput(field, f"{_show(text)} is not a whole number from {least} to "
                                  f"{most} (digits 0-9 only)")  # fmt: skip
    return value


def limit(name: str, text: str) -> int:
    """A rate limit or quota named ``name`` (per_minute, quota_day...): 1 to 10**12."""
    return whole_number(f"limits.{name}", text, 1, MAX_LIMIT)


def days(field: str, text: str) -> int:
    """A number of days, 1 to 36525 (100 years)."""
    return whole_number(field, text, 1, MAX_DAYS)


def page_size(field: str, text: str) -> int:
    """How many rows a listing returns, 1 to 1000."""
    return whole_number(field, text, 1, MAX_PAGE)


def choice(field: str, text: str, offered: Collection[int], also: Collection[str] = ()) -> int:
    """One of the numbers ``offered`` (``also``: the other words the field takes, named
    in the message)."""
    value = digits(text)
    if value is None or value not in offered:
        others = ", ".join([*also, *map(str, sorted(offered))])
        raise InvalidInput(field, f"{_show(text)} is not one of {others}")
    return value
