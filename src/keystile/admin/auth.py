"""Who is calling the admin API, and what they may touch.

- ``KEYSTILE_ADMIN_KEY`` or a key with the ``admin`` scope: everything;
- a key with ``keys:self``: only keys of its own user (or owner), and never a key
  that may do more than itself (:func:`keystile.bounds.excess`: scopes, limits,
  allowlist, expiry) by any route: create, change, rotate;
- any other valid key: 403; no or a bad key: 401.

The caller's key is judged by the same core as on the auth path
(:meth:`keystile.gate.Authorizer.caller`): a revoked, expired or rate-limited
key, or one used from outside its allowlist, is refused here too.
"""

from __future__ import annotations

from aiohttp import web

from keystile.core.clientip import TrustedProxies
from keystile.manage.permissions import ADMIN, SELF_SERVICE, Caller
from keystile.manage.refusal import ApiError
from keystile.serve.gate import Authorizer


async def authenticate(request: web.Request, authorizer: Authorizer, trusted: TrustedProxies,
                       scopes: tuple[str, ...] = (ADMIN, SELF_SERVICE)) -> Caller:  # fmt: skip
    """The caller, judged as on the auth path (state, expiry, IP allowlist, limits),
    holding one of ``scopes``."""
    client_ip = trusted.client_ip(request.remote, request.headers.get("X-Forwarded-For"))
    decision, _ = await authorizer.caller(request.headers, client_ip)
    reason, record = decision.reason, decision.record
    if reason is not None or record is None:
        assert reason is not None
        raise ApiError(reason.outcome.value, reason.type, reason.code, reason.message)
    caller = Caller(record)
    if not caller.is_admin and not any(scope in record.granted for scope in scopes):
        raise ApiError(403, "permission_error", "insufficient_scope",
                       f"this needs a key with scope {' or '.join(scopes)}")  # fmt: skip
    return caller


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise ApiError(403, "permission_error", "insufficient_scope", "this needs scope admin")
