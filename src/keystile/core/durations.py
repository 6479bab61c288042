"""Durations ("30d", "1h30m", "0") and instants (ISO-8601) as people type them.

Digits are ASCII 0-9 only (``[0-9]`` in the patterns, never ``\\d`` or ``isdigit``).

Both are bounded: a duration is at most :data:`MAX_DURATION` (100 years), and
:func:`format_instant` renders any stored number, however far out of range,
without raising (it clamps to years 1-9999), so no listing can break on one.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# 1-5 parts, the first without a leading zero; lower case only: "1M" would read as a
# month to some, a minute to others
LIFETIME_PATTERN = "^[1-9][0-9]{0,5}[smhdw]([0-9]{1,6}[smhdw]){0,4}$"  # longer than 0
DURATION_PATTERN = "^(0[smhdw]?|[1-9][0-9]{0,5}[smhdw]([0-9]{1,6}[smhdw]){0,4})$"  # or 0
MAX_DURATION = 36525 * 86400  # 100 years of 365.25 days
MAX_INSTANT_LENGTH = 64
_DURATION_RE = re.compile(DURATION_PATTERN)
_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PART_RE = re.compile(r"([0-9]+)([smhdw])")
_FIRST = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_LAST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def parse_duration(text: str) -> float:
    """Seconds in ``text`` such as ``30d``, ``24h``, ``1h30m``, ``90s`` or ``0``, at most
    100 years (:data:`DURATION_PATTERN`); raises ValueError naming the text otherwise."""
    if not _DURATION_RE.fullmatch(text):
        raise ValueError(f"{text[:80]!r} is not a duration: use e.g. 30d, 24h, 15m, 90s, "
                         "1h30m or 0 (units s, m, h, d, w in lower case)")  # fmt: skip
    seconds = sum(int(n) * UNITS[u] for n, u in _PART_RE.findall(text))
    if seconds > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than 100 years (36525d), the most allowed")
    return float(seconds)


def parse_instant(text: str) -> float:
    """Unix seconds of an ISO-8601 date or date-time; a time without a zone is UTC."""
    try:
        if len(text) > MAX_INSTANT_LENGTH or not text.isascii():  # digits 0-9 only
            raise ValueError
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text[:80]!r} is not an ISO-8601 date-time: "
            "use e.g. 2027-01-31 or 2027-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_day(text: str) -> float:
    """Unix seconds of the start (UTC) of a day written YYYY-MM-DD, as a date input sends
    it; nothing else (no time, no week or ordinal date, no other digits than 0-9)."""
    if not _DAY_RE.fullmatch(text):
        raise ValueError(f"{text[:80]!r} is not a date: use YYYY-MM-DD, e.g. 2027-01-31")
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise ValueError(f"{text!r} is not a day of the calendar") from None


def format_instant(seconds: float | None) -> str:
    """ISO-8601 UTC to the second, or '-' for None. Never raises: a stored value outside
    years 1-9999 (written by hand or by an older version) shows as the nearest of them."""
    if seconds is None or math.isnan(seconds):
        return "-"
    clamped = min(max(seconds, _FIRST), _LAST)
    moment = datetime.fromtimestamp(clamped, UTC).replace(microsecond=0, tzinfo=None)
    return moment.isoformat() + "Z"  # isoformat pads the year to four digits, strftime may not
