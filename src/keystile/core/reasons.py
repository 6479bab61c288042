"""Reason codes and details: what a client, a log line and a metric call each denial.

The codes are a public contract (client SDKs and dashboards read them); the
error ``type`` follows the OpenAI/Anthropic convention that LLM clients parse.
A code can have several causes, so every denial also carries a *detail* from
one small fixed set (``X-Keystile-Detail``, the ``detail`` log field and
metric label): an operator tells a misconfigured proxy (``target_unknown``)
from a missing route (``no_route``) without reading code.

Every denial keystile can answer is one of the constants below, and
:data:`REASONS` lists them all: the docs test reads it, so a new one cannot go
undocumented.
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


@dataclass(frozen=True, slots=True, eq=False)  # identity: a cheap key in reply memos
class Reason:
    code: str  # the contract: missing_api_key, invalid_api_key, ...
    detail: str  # the cause, from a small fixed set
    outcome: Outcome
    type: str
    message: str  # fixed text for the client; never holds request data


_AUTH, _PERM, _RATE = "authentication_error", "permission_error", "rate_limit_error"
_401, _403, _429 = Outcome.UNAUTHENTICATED, Outcome.FORBIDDEN, Outcome.RATE_LIMITED

MISSING_API_KEY = Reason(
    "missing_api_key",
    "no_key",
    _401,
    _AUTH,
    "No API key provided. Send 'Authorization: Bearer <key>' or 'x-api-key'.",
)
INVALID_API_KEY = Reason("invalid_api_key", "unknown_key", _401, _AUTH, "Invalid API key.")
CONFLICTING_KEYS = Reason(
    "invalid_api_key", "conflicting_keys", _401, _AUTH, "Two different API keys in one request."
)
EXPIRED_API_KEY = Reason("expired_api_key", "expired", _401, _AUTH, "This API key has expired.")
REVOKED_API_KEY = Reason(
    "revoked_api_key", "revoked", _401, _AUTH, "This API key has been revoked."
)
DISABLED_API_KEY = Reason(
    "revoked_api_key", "disabled", _401, _AUTH, "This API key has been disabled."
)
INSUFFICIENT_SCOPE = Reason(
    "insufficient_scope",
    "missing_scope",
    _403,
    _PERM,
    "This API key does not have the scope this route requires.",
)
ROUTE_NOT_ALLOWED = Reason(
    "route_not_allowed", "no_route", _403, _PERM, "This route is not available to API keys."
)
CREDENTIAL_NOT_ALLOWED = Reason(
    "route_not_allowed",
    "credential_not_allowed",
    _403,
    _PERM,
    "This API key is bound to an upstream credential this route does not use.",
)
NO_CREDENTIAL = Reason(
    "route_not_allowed",
    "no_credential",
    _403,
    _PERM,
    "This route needs an upstream credential and this API key has none.",
)
AMBIGUOUS_PATH = Reason(
    "route_not_allowed",
    "ambiguous_path",
    _403,
    _PERM,
    "The request path is ambiguous and was refused.",
)
# the Host header names another host than the request line (absolute form): the upstream
# would get one, keystile judge the other
AMBIGUOUS_HOST = Reason(
    "route_not_allowed",
    "ambiguous_host",
    _403,
    _PERM,
    "The request names two different hosts and was refused.",
)
UNKNOWN_TARGET = Reason(
    "route_not_allowed",
    "target_unknown",
    _403,
    _PERM,
    "The original request target is unknown (proxy misconfigured).",
)
UNTRUSTED_PEER = Reason(
    "route_not_allowed",
    "untrusted_peer",
    _403,
    _PERM,
    "This auth request did not come from a trusted proxy.",
)
IMITATED_HEADER = Reason(
    "route_not_allowed",
    "imitated_header",
    _403,
    _PERM,
    "A request header imitates one that keystile sets.",
)
BAD_METHOD = Reason(
    "route_not_allowed", "bad_method", _403, _PERM, "The request method is not one keystile judges."
)
METHOD_OVERRIDE = Reason(
    "route_not_allowed",
    "method_override",
    _403,
    _PERM,
    "The request asks for a method override that is not a known method.",
)
CREDENTIAL_COPY = Reason(
    "route_not_allowed",
    "credential_copy",
    _403,
    _PERM,
    "Send the API key in a header only, not in the URL or a cookie.",
)
MALFORMED_REQUEST = Reason(
    "route_not_allowed",
    "malformed_request",
    _403,
    _PERM,
    "The request could not be read and was refused.",
)
IP_NOT_ALLOWED = Reason(
    "ip_not_allowed", "ip_allowlist", _403, _PERM, "This API key may not be used from this address."
)
RATE_LIMITED = Reason("rate_limited", "rate_limit", _429, _RATE, "Rate limit exceeded.")
QUOTA_EXCEEDED = Reason("quota_exceeded", "quota", _429, _RATE, "Quota exceeded.")
TOKENS_PER_MINUTE = Reason("quota_exceeded", "tokens_per_minute", _429, _RATE,
                           "Token budget exceeded: tokens_per_minute is spent.")  # fmt: skip
TOKENS_PER_DAY = Reason("quota_exceeded", "tokens_per_day", _429, _RATE,
                        "Token budget exceeded: tokens_per_day is spent.")  # fmt: skip
TOKENS_PER_MONTH = Reason("quota_exceeded", "tokens_per_month", _429, _RATE,
                          "Token budget exceeded: tokens_per_month is spent.")  # fmt: skip
INVALID_KEYS = Reason(
    "rate_limited",
    "invalid_keys",
    _429,
    _RATE,
    "Too many invalid API keys from this address; retry later.",
)
LOGIN_REQUIRED = Reason("login_required", "no_session", _401, _AUTH, "Sign in to use this page.")
INVALID_SESSION = Reason(
    "login_required", "unknown_session", _401, _AUTH, "Your session is not valid: sign in again."
)
SESSION_EXPIRED = Reason(
    "login_required", "session_ended", _401, _AUTH, "Your session has ended: sign in again."
)
SESSION_NOT_ALLOWED = Reason(
    "route_not_allowed",
    "session_route",
    _403,
    _PERM,
    "This route takes API keys, not a browser session.",
)
CROSS_SITE_REQUEST = Reason(
    "cross_site_request",
    "cross_site",
    _403,
    _PERM,
    "A cross-site request with a session cookie was refused.",
)
STORE_UNAVAILABLE = Reason(
    "auth_unavailable",
    "store_unavailable",
    Outcome.UNAVAILABLE,
    "api_error",
    "Authentication is temporarily unavailable.",
)
# a limited key while Redis (shared limits) is down or slow and redis.unavailable = deny
LIMITS_UNAVAILABLE = Reason("auth_unavailable", "limits_unavailable", Outcome.UNAVAILABLE,
                            "api_error", "Authentication is temporarily unavailable.")  # fmt: skip
INTERNAL_ERROR = Reason("auth_unavailable", "internal_error", Outcome.UNAVAILABLE, "api_error",
                        "Authentication is temporarily unavailable.")  # fmt: skip
UNAVAILABLE = STORE_UNAVAILABLE

REASONS: tuple[Reason, ...] = (
    MISSING_API_KEY, INVALID_API_KEY, CONFLICTING_KEYS, EXPIRED_API_KEY, REVOKED_API_KEY,
    DISABLED_API_KEY, INSUFFICIENT_SCOPE, ROUTE_NOT_ALLOWED, CREDENTIAL_NOT_ALLOWED,
    NO_CREDENTIAL, AMBIGUOUS_PATH, AMBIGUOUS_HOST, UNKNOWN_TARGET,
    UNTRUSTED_PEER, IMITATED_HEADER, BAD_METHOD, METHOD_OVERRIDE, CREDENTIAL_COPY,
    MALFORMED_REQUEST, IP_NOT_ALLOWED, RATE_LIMITED, QUOTA_EXCEEDED, TOKENS_PER_MINUTE,
    TOKENS_PER_DAY, TOKENS_PER_MONTH, INVALID_KEYS,
    LOGIN_REQUIRED, INVALID_SESSION, SESSION_EXPIRED, SESSION_NOT_ALLOWED, CROSS_SITE_REQUEST,
    STORE_UNAVAILABLE, LIMITS_UNAVAILABLE,
    INTERNAL_ERROR,
)  # fmt: skip

DENIAL_CODES = ("missing_api_key", "invalid_api_key", "expired_api_key", "revoked_api_key",
                "insufficient_scope", "route_not_allowed", "ip_not_allowed", "rate_limited",
                "quota_exceeded", "login_required", "cross_site_request")  # fmt: skip
DETAILS = tuple(dict.fromkeys(reason.detail for reason in REASONS))
