"""Durations ("30d", "1h30m", "0") and instants (ISO-8601) as people type them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART_RE = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` such as ``30d``, ``24h``, ``1h30m``, ``90s`` or ``0``."""
    cleaned = text.strip().lower()
    if cleaned == "0":
        return 0.0
    parts = _PART_RE.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"{text!r} is not a duration: use e.g. 30d, 24h, 15m, 90s, 1h30m or 0")
    return float(sum(int(n) * _UNITS[u] for n, u in parts))


def parse_instant(text: str) -> float:
    """Unix seconds of an ISO-8601 date or date-time; a time without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO-8601 date-time: use e.g. 2027-01-31 or 2027-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def format_instant(seconds: float | None) -> str:
    """ISO-8601 UTC to the second, or '-' for None."""
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
