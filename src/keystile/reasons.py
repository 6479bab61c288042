"""Reason codes: what a client, a log line and a metric call each outcome.

The codes are a public contract (client SDKs and dashboards read them).
The error ``type`` follows the OpenAI/Anthropic convention that LLM clients parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    ALLOW = 200
    UNAUTHENTICATED = 401
    FORBIDDEN = 403
    RATE_LIMITED = 429
    UNAVAILABLE = 503


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    outcome: Outcome
    type: str
    message: str


def _r(code: str, outcome: Outcome, type_: str, message: str) -> Reason:
    return Reason(code, outcome, type_, message)


_AUTH, _PERM, _RATE = "authentication_error", "permission_error", "rate_limit_error"
MISSING_API_KEY = _r(
    "missing_api_key",
    Outcome.UNAUTHENTICATED,
    _AUTH,
    "No API key provided. Send 'Authorization: Bearer <key>' or 'x-api-key'.",
)
INVALID_API_KEY = _r("invalid_api_key", Outcome.UNAUTHENTICATED, _AUTH, "Invalid API key.")
CONFLICTING_KEYS = _r(
    "invalid_api_key", Outcome.UNAUTHENTICATED, _AUTH, "Two different API keys in one request."
)
EXPIRED_API_KEY = _r("expired_api_key", Outcome.UNAUTHENTICATED, _AUTH, "This API key has expired.")
REVOKED_API_KEY = _r(
    "revoked_api_key", Outcome.UNAUTHENTICATED, _AUTH, "This API key has been revoked."
)
INSUFFICIENT_SCOPE = _r(
    "insufficient_scope",
    Outcome.FORBIDDEN,
    _PERM,
    "This API key does not have the scope this route requires.",
)
ROUTE_NOT_ALLOWED = _r(
    "route_not_allowed", Outcome.FORBIDDEN, _PERM, "This route is not available to API keys."
)
AMBIGUOUS_PATH = _r(
    "route_not_allowed", Outcome.FORBIDDEN, _PERM, "The request path is ambiguous and was refused."
)
UNKNOWN_TARGET = _r(
    "route_not_allowed",
    Outcome.FORBIDDEN,
    _PERM,
    "The original request target is unknown (proxy misconfigured).",
)
IMITATED_HEADER = _r("route_not_allowed", Outcome.FORBIDDEN, _PERM,
                     "A request header imitates one that keystile sets.")  # fmt: skip
IP_NOT_ALLOWED = _r(
    "ip_not_allowed", Outcome.FORBIDDEN, _PERM, "This API key may not be used from this address."
)
RATE_LIMITED = _r("rate_limited", Outcome.RATE_LIMITED, _RATE, "Rate limit exceeded.")
QUOTA_EXCEEDED = _r("quota_exceeded", Outcome.RATE_LIMITED, _RATE, "Quota exceeded.")
UNAVAILABLE = _r("auth_unavailable", Outcome.UNAVAILABLE, "api_error",
                 "Authentication is temporarily unavailable.")  # fmt: skip

DENIAL_CODES = ("missing_api_key", "invalid_api_key", "expired_api_key", "revoked_api_key",
                "insufficient_scope", "route_not_allowed", "ip_not_allowed", "rate_limited",
                "quota_exceeded")  # fmt: skip
