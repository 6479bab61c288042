"""What every adapter has, and the deny rendering they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import orjson
from aiohttp import web

from keystile.clientip import TrustedProxies
from keystile.decide import Decision, Facts
from keystile.reasons import Outcome, Reason

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Adapter:
    name: str  # label in logs and metrics
    path: str  # route on the main listener (aiohttp syntax)
    facts: Callable[[web.Request, TrustedProxies], Facts]
    render: Callable[[Decision], web.Response]


@cache
def error_body(reason: Reason) -> bytes:
    """OpenAI-style error JSON, what LLM client SDKs show."""
    error = {"message": reason.message, "type": reason.type, "code": reason.code}
    return orjson.dumps({"error": error})


def www_authenticate(reason: Reason) -> str:
    if reason.code == "missing_api_key":
        return 'Bearer realm="keystile"'
    return f'Bearer realm="keystile", error="invalid_token", error_description="{reason.code}"'


def deny_response(
    decision: Decision, status: int | None = None, extra: dict[str, str] | None = None
) -> web.Response:
    """A denial: the reason's status (unless the proxy needs another), JSON body, safe headers."""
    reason = decision.reason
    assert reason is not None
    headers = deny_headers(decision)
    if extra:
        headers.update(extra)
    return web.Response(
        status=status or reason.outcome.value,
        body=error_body(reason),
        headers=headers,
        content_type=JSON,
    )


def deny_headers(decision: Decision) -> dict[str, str]:
    """Headers safe to show the client on a denial: never identity or upstream secrets."""
    reason = decision.reason
    assert reason is not None
    headers = {"X-Keystile-Reason": reason.code, "Cache-Control": "no-store"}
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
