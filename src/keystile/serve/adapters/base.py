"""What every adapter has, and the deny rendering they share.

Adapters know no HTTP server: they read an :class:`Inbound` (what any HTTP/1.1
server parsed off the wire) and answer a :class:`Reply`; :mod:`keystile.gate`
serves them from aiohttp and straight off the socket alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import orjson

from keystile.core.clientip import TrustedProxies
from keystile.core.credentials import Headers
from keystile.core.decide import Decision, Facts, Grant
from keystile.core.reasons import Outcome, Reason

JSON = "application/json"


class Inbound(NamedTuple):
    """An auth request as the HTTP server received it."""

    method: str
    target: str  # the request target as sent: path and query, not decoded
    host: str
    headers: Headers
    peer: str | None  # the connecting address


class Reply(NamedTuple):
    """The answer to the proxy; Content-Length is the server's business."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Adapter:
    """One proxy dialect.

    ``render`` may depend on nothing but a denial's reason, ``retry_after``,
    ``rate`` and ``location``, or an allow's :class:`~keystile.decide.Grant`
    (given for allows only; a token budget's reservation is one of its headers)
    and ``cookie``: replies are built once and reused on that promise (never when
    a decision carries a location, a cookie or a reservation). An
    allow's ``X-RateLimit-*`` headers are added by the gate, the same for every
    dialect.
    """

    name: str  # label in logs and metrics
    path: str  # route on the main listener (aiohttp syntax)
    facts: Callable[[Inbound, TrustedProxies], Facts]
    render: Callable[[Decision, Grant | None], Reply]


@cache
def error_body(reason: Reason) -> bytes:
    """OpenAI-style error JSON, what LLM client SDKs show."""
    error = {"message": reason.message, "type": reason.type, "code": reason.code}
    return orjson.dumps({"error": error})


def www_authenticate(reason: Reason) -> str:
    if reason.code in ("missing_api_key", "login_required"):
        return 'Bearer realm="keystile"'
    return f'Bearer realm="keystile", error="invalid_token", error_description="{reason.code}"'


def deny_reply(
    decision: Decision, status: int | None = None, extra: dict[str, str] | None = None
) -> Reply:
    """A denial: the reason's status (unless the proxy needs another), JSON body, safe
    headers. A browser sent to sign in gets a 302 with its Location."""
    reason = decision.reason
    assert reason is not None
    headers = deny_headers(decision)
    if extra:
        headers.update(extra)
    headers["Content-Type"] = JSON
    if decision.location is not None:
        headers["Location"] = decision.location
        status = status or 302
    return Reply(status or reason.outcome.value, list(headers.items()), error_body(reason))


def deny_headers(decision: Decision) -> dict[str, str]:
    """Headers safe to show the client on a denial: never identity or upstream secrets."""
    reason = decision.reason
    assert reason is not None
    headers = {"X-Keystile-Reason": reason.code, "X-Keystile-Detail": reason.detail,
               "Cache-Control": "no-store"}  # fmt: skip
    if reason.outcome is Outcome.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = www_authenticate(reason)
    if decision.retry_after is not None:
        headers["Retry-After"] = str(decision.retry_after)
    headers.update(rate_headers(decision))
    return headers


def rate_headers(decision: Decision) -> list[tuple[str, str]]:
    """X-RateLimit-Limit / -Remaining / -Reset (seconds) when a rate limit applied."""
    rate = decision.rate
    if rate is None:
        return []
    return [("X-RateLimit-Limit", str(rate.limit)),
            ("X-RateLimit-Remaining", str(rate.remaining)),
            ("X-RateLimit-Reset", str(rate.reset))]  # fmt: skip
