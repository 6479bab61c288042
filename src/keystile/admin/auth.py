"""Who is calling the admin API, and what they may touch.

- ``KEYSTILE_ADMIN_KEY`` or a key with the ``admin`` scope: everything;
- a key with ``keys:self``: only keys of its own user (or owner), and only scopes
  it holds itself (never ``admin``);
- any other valid key: 403; no or a bad key: 401.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from keystile.admin.http import ApiError
from keystile.cache import CachedLookup
from keystile.credentials import ConflictingCredentials, CredentialSource, extract
from keystile.store import KeyRecord
from keystile.store.records import ACTIVE

ADMIN = "admin"
SELF_SERVICE = "keys:self"


@dataclass(frozen=True, slots=True)
class Caller:
    record: KeyRecord

    @property
    def actor(self) -> str:
        return self.record.id

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.record.granted

    def owns(self, key: KeyRecord) -> bool:
        if self.is_admin:
            return True
        mine = self.record
        if mine.user_id is not None:
            return key.user_id == mine.user_id
        return mine.owner is not None and key.owner == mine.owner

    def may_grant(self, scopes: list[str]) -> None:
        """Self-service keys hand out no more than they hold, and never admin."""
        if self.is_admin:
            return
        extra = set(scopes) - (set(self.record.granted) - {ADMIN})
        if extra:
            raise ApiError(403, "permission_error", "scope_not_grantable",
                           f"this key cannot grant {sorted(extra)}")  # fmt: skip


async def authenticate(
    request: web.Request, keys: CachedLookup, sources: tuple[CredentialSource, ...], now: float
) -> Caller:
    try:
        token = extract(request.headers, sources)
    except ConflictingCredentials:
        raise ApiError(401, "authentication_error", "invalid_api_key",
                       "two different API keys in one request") from None  # fmt: skip
    if token is None:
        raise ApiError(401, "authentication_error", "missing_api_key", "no API key provided")
    record = await keys.find(token)
    if record is None or record.state(now) != ACTIVE:
        raise ApiError(401, "authentication_error", "invalid_api_key", "invalid API key")
    caller = Caller(record)
    if not caller.is_admin and SELF_SERVICE not in record.granted:
        raise ApiError(403, "permission_error", "insufficient_scope",
                       "the admin API needs a key with scope admin or keys:self")  # fmt: skip
    return caller


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise ApiError(403, "permission_error", "insufficient_scope", "this needs scope admin")
