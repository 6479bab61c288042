"""Signing in with an OpenID Connect provider, and self-service keys: no HTTP
framework here (the pages are in :mod:`keystile.web.oidc`).

:meth:`SingleSignOn.begin` stores a sign-in under way (by the hash of its state)
and returns the provider's URL; :meth:`SingleSignOn.finish` takes it out again
(once), checks that the same browser came back in time, trades the code, checks
the ID token, and finds or creates the person by their verified email. Every
refusal is an :class:`~keystile.oidc.OIDCFailure` with a reason code, audited
(``oidc.login_failed``, never with a secret).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keystile.core.emails import InvalidEmail, domain_of, email_key, fold
from keystile.core.errors import AtCapacity, Conflict
from keystile.identity.oidc import OIDCFailure, Provider, digest, new_secret
from keystile.identity.sessions import SessionService, SignedIn
from keystile.manage.accounts import AccountService
from keystile.manage.service import Issued
from keystile.store import Audit, KeyFilter, KeyRecord, Store, User
from keystile.store.oidc import Pending

log = logging.getLogger("keystile.sso")
PENDING_TTL = 600.0  # seconds from "Sign in with ..." to the callback
ACTOR = "oidc"


@dataclass(frozen=True, slots=True)
class Policy:
    """Who may sign in, and what the provider's claims make of them."""

    email_domains: frozenset[str] = frozenset()
    groups_claim: str = "groups"
    admin_values: tuple[str, ...] = ()
    group_map: tuple[tuple[str, str], ...] = ()


def email_domain_allowed(key: str, domains: frozenset[str]) -> bool:
    """The domain of ``key`` (an :func:`~keystile.emails.email_key`) is one of ``domains``
    exactly, compared ASCII-lower-cased; no domains: any."""
    return not domains or domain_of(key) in {fold(domain) for domain in domains}


def verified(claims: Mapping[str, Any]) -> bool:
    """email_verified is true (a boolean; the string "true", as some providers send it)."""
    value = claims.get("email_verified")
    return value is True or (isinstance(value, str) and fold(value) == "true")


def claim_values(claims: Mapping[str, Any], name: str) -> set[str]:
    value = claims.get(name)
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {str(item) for item in value if isinstance(item, str | int)}
    return set()


class SingleSignOn:
    def __init__(self, provider: Provider, accounts: AccountService, sessions: SessionService,
                 policy: Policy, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.provider = provider
        self.accounts = accounts
        self.store: Store = accounts.store
        self.sessions = sessions
        self.policy = policy
        self.clock = clock

    async def begin(self, return_to: str, browser: str) -> str:
        """Store a sign-in bound to the ``browser`` cookie's value; the provider's URL."""
        state, nonce, verifier = new_secret(), new_secret(), new_secret()
        url = await self.provider.authorization_url(state, nonce, verifier)
        now = self.clock()
        pending = Pending(digest(browser), nonce, verifier, return_to, now)
        await self.store.insert_pending(digest(state), pending, now - PENDING_TTL)
        return url

    async def take(self, state: str | None, browser: str | None) -> Pending:
        """The sign-in ``state`` belongs to, taken out of the store (a second try finds nothing)."""
        if not state:
            raise OIDCFailure("state_missing", "The provider sent the browser back without the "
                              "sign-in's state.")  # fmt: skip
        pending = await self.store.take_pending(digest(state[:512]))
        if pending is None:
            raise OIDCFailure("state_unknown", "This sign-in link was already used, has "
                              "expired, or was not started here.")  # fmt: skip
        if browser is None or digest(browser) != pending.browser_hash:
            raise OIDCFailure("state_mismatch", "This sign-in was started in another browser "
                              "(or its cookie was lost).")  # fmt: skip
        if self.clock() - pending.created_at > PENDING_TTL:
            raise OIDCFailure("state_expired", "This sign-in took longer than 10 minutes.")
        return pending

    async def finish(self, pending: Pending, code: str | None, address: str | None,
                     user_agent: str | None) -> SignedIn:  # fmt: skip
        """Code → tokens → checked claims → the person → a new browser session."""
        if not code:
            raise OIDCFailure("code_missing", "The provider sent the browser back without a code.")
        tokens = await self.provider.exchange(code[:4096], pending.verifier)
        claims = await self.provider.verify(tokens.id_token, pending.nonce)
        if "email" not in claims:
            claims = {**await self.provider.userinfo(tokens.access_token, claims["sub"]), **claims}
        user = await self._person(claims)
        return await self.sessions.start(user, address, user_agent, "session.login_oidc")

    async def _person(self, claims: Mapping[str, Any]) -> User:
        given = claims.get("email")
        if not isinstance(given, str) or not given:
            raise OIDCFailure("email_missing", "The provider did not tell keystile your email "
                              "address (is the 'email' scope granted?).")  # fmt: skip
        try:  # first: the domain of an address keystile does not take means nothing
            email = email_key(given)
        except InvalidEmail as exc:
            raise OIDCFailure("email_invalid", str(exc), exc.reason) from None
        if not verified(claims):
            raise OIDCFailure("email_not_verified", f"The provider has not verified {email}.",
                              email=email)  # fmt: skip
        if not email_domain_allowed(email, self.policy.email_domains):
            raise OIDCFailure("domain_not_allowed", f"Accounts of {domain_of(email)} "
                              "may not sign in here.", email=email)  # fmt: skip
        found = await self.store.find_user_by_email(email)
        if found:
            user = found[0]
        else:
            try:
                user = await self.accounts.create_user(email, actor=ACTOR, email=email)
            except Conflict:  # made by another sign-in a moment ago
                user = (await self.store.find_user_by_email(email))[0]
        if user.disabled_at is not None:
            raise OIDCFailure("user_disabled", f"The account {user.external_id} is disabled.",
                              email=email)  # fmt: skip
        return await self._map_claims(user, claim_values(claims, self.policy.groups_claim))

    async def _map_claims(self, user: User, values: set[str]) -> User:
        """Role and groups as the claim says, where configured."""
        policy = self.policy
        if policy.admin_values:
            role = "admin" if values & set(policy.admin_values) else "member"
            if role != user.role:
                user = await self.accounts.update_user(user.id, role=role, actor=ACTOR)
        if policy.group_map:
            groups = {group.name: group.id for group in await self.store.list_groups()}
            wanted: dict[str, bool] = {}
            for claim, name in policy.group_map:
                wanted[name] = wanted.get(name, False) or claim in values
            for name, member in wanted.items():
                if name not in groups:
                    log.warning("oidc.group_map names group %r, which does not exist", name)
                    continue
                await self.accounts.set_user_membership(groups[name], user.id, member, ACTOR)
        return user

    async def refused(self, failure: OIDCFailure, address: str | None) -> None:
        """The audit entry of a refused sign-in (never a token, code or secret)."""
        after = {"reason": failure.code, "detail": failure.detail, "address": address}
        target = failure.email or "(unknown)"
        await self.store.record_audit(Audit(ACTOR, "oidc.login_failed"), "user", target, after)


# -- self-service keys --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    name: str = "sso"
    expires_in: float = 30 * 86400.0
    scopes: tuple[str, ...] = ()
    limit: int = 3


class AtLimit(Exception):
    """The person holds ``limit`` active self-service keys already; ``oldest`` is named."""

    def __init__(self, limit: int, oldest: KeyRecord | None) -> None:
        super().__init__(f"at most {limit} active keys")
        self.limit = limit
        self.oldest = oldest


MARK = {"source": "sso"}  # in a self-service key's metadata: how the cap finds them


class SelfServiceKeys:
    def __init__(self, accounts: AccountService, policy: KeyPolicy) -> None:
        self.keys = accounts.keys
        self.policy = policy

    async def active(self, user_id: str) -> list[KeyRecord]:
        """The person's active self-service keys, oldest first."""
        found = await self.keys.store.find_keys(KeyFilter(user_id=user_id), self.keys.clock())
        return [key for key in found if key.metadata.get("source") == MARK["source"]]

    async def issue(self, user_id: str, actor: str) -> Issued:
        """A new key, shown once; AtLimit (naming the oldest) when they hold enough."""
        limit = self.policy.limit
        expires = self.keys.clock() + self.policy.expires_in
        try:  # counted in the insert's transaction: ten parallel requests make no fourth key
            return await self.keys.create(self.policy.name, scopes=self.policy.scopes,
                                          user_id=user_id, expires_at=expires, metadata=MARK,
                                          actor=actor, at_most=(MARK["source"], limit))  # fmt: skip
        except AtCapacity:
            active = await self.active(user_id)
            if not active:  # a limit of 0: self-service keys are off
                raise AtLimit(limit, None) from None
            raise AtLimit(limit, active[0]) from None
