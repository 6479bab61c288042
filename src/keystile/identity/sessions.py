"""Browser sessions: signing in and out, and a session as the decision core sees it.

A session token is 256 random bits, sent to the browser once in a cookie and
stored only as its SHA-256 hash. On the request path a session is looked up
like a key (same cache, same change log, same fail-closed rules) and judged by
the same core as a :class:`~keystile.model.KeyRecord` of kind ``session``:
its scopes are its user's (the role's, the groups'), its limits and allowlist
the user's team's, and it ends at the first of its absolute end, its idle end
(last request + ``session_idle_timeout``), a logout, a revocation, or its
user being disabled.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from keystile.core.emails import fold
from keystile.core.errors import KeystileError, NotFound
from keystile.core.model import ADMIN_SCOPE, ALL_SCOPES, SESSION, KeyRecord
from keystile.identity.passwords import verify_password
from keystile.store import Audit, Session, Store, User
from keystile.store.sessions import StoredSession

SCHEME = "session"
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
Candidates = tuple[tuple[str, str], ...]


def new_token() -> str:
    """256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session_id() -> str:
    return "ses_" + secrets.token_hex(12)


def role_scopes(role: str, member_scopes: Iterable[str]) -> tuple[str, ...]:
    """What a role grants before groups: an admin every scope, a member the configured few."""
    if role == "admin":
        return (ALL_SCOPES, ADMIN_SCOPE)
    return tuple(sorted(set(member_scopes)))


def principal(stored: StoredSession, idle: float, member_scopes: Iterable[str]) -> KeyRecord:
    """The session as the decision core judges it."""
    return KeyRecord(
        id=stored.id,
        key_hash=stored.token_hash,
        hash_scheme=SCHEME,
        display_prefix="",
        name=stored.name,
        created_at=stored.created_at,
        updated_at=stored.created_at,
        owner=stored.email,
        scopes=tuple(sorted(role_scopes(stored.role, member_scopes))),
        expires_at=min(stored.expires_at, stored.last_seen_at + idle),
        enabled=stored.disabled_at is None,
        revoked_at=stored.revoked_at,
        origin=SCHEME,
        user_id=stored.user_id,
        groups=stored.groups,
        team=stored.team,
        kind=SESSION,
        role=stored.role,
    )


class _NoStatic:
    @staticmethod
    def match(token: str) -> KeyRecord | None:
        return None


class SessionLookup:
    """From a session cookie's token to its record: what :class:`~keystile.cache.CachedLookup`
    asks of a lookup, for sessions."""

    static = _NoStatic()

    def __init__(self, store: Store, idle: float, member_scopes: Iterable[str]) -> None:
        self.store = store
        self.idle = idle
        self.member_scopes = tuple(member_scopes)
        self.hasher = self

    @staticmethod
    def candidates(token: str) -> Candidates:
        return ((SCHEME, token_hash(token)),)

    @staticmethod
    def may_exist(token: str) -> bool:
        return _TOKEN_RE.fullmatch(token) is not None

    async def refresh(self) -> None:
        return None

    async def find_stored(self, candidates: Candidates) -> KeyRecord | None:
        stored = await self.store.find_session(candidates[0][1])
        return None if stored is None else principal(stored, self.idle, self.member_scopes)

    async def stored_hashes(self, after: str, limit: int) -> list[str]:
        return await self.store.session_hashes(after, limit)


class SignInRefused(KeystileError):
    """A sign-in that did not succeed; ``code`` says why, the same for a wrong name
    and a wrong password."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


MAX_CHECKING = 8  # password checks at once per process; more are told to retry
WRONG = ("wrong_credentials", "The user name or password is wrong.")
LOCKED = ("locked_out", "Too many failed sign-ins: try again later.")


def _who(address: str) -> str:
    """The address a throttle counts: an IPv6 address by its /64 (one host has many)."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    except ValueError:
        return address


class LoginThrottle:
    """Sign-in attempts per (user name, address) and per address, in a sliding window.

    An attempt counts from the moment it starts (so parallel guesses cannot all
    slip past the check) and is forgotten when it succeeds. ``attempts`` of one
    name from one address lock that pair (the name ASCII-lower-cased, by
    :func:`keystile.emails.fold`); four times as many from one address (names
    sprayed) lock the address. In memory, per process: with several
    workers each keeps its own count. Entries expire from the oldest end; when
    ``max_entries`` are all still live, a new pair is treated as locked (never
    is a locked pair forgotten to make room)."""

    def __init__(self, attempts: int, window: float, max_entries: int = 100_000) -> None:
        self.attempts = attempts
        self.window = window
        self.max_entries = max_entries
        # key -> attempt times, oldest first; keys in the order they were last touched
        self.failures: dict[tuple[str, str], list[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        times = self.failures.get(key)
        if not times:
            return []
        while times and now - times[0] >= self.window:
            times.pop(0)
        if not times:
            del self.failures[key]
        return times

    def locked(self, name: str, address: str, now: float) -> bool:
        who = _who(address)
        self.expire(now)
        full = len(self.failures) >= self.max_entries and (fold(name), who) not in self.failures
        return (full or len(self._recent((fold(name), who), now)) >= self.attempts
                or len(self._recent(("", who), now)) >= self.attempts * 4)  # fmt: skip

    def attempt(self, name: str, address: str, now: float) -> None:
        """Count an attempt now (before the password is checked)."""
        who = _who(address)
        for key in ((fold(name), who), ("", who)):
            times = self.failures.pop(key, [])  # re-inserted: most recently touched last
            times.append(now)
            self.failures[key] = times

    def succeeded(self, name: str, address: str) -> None:
        """A right password: this attempt was not a failure."""
        who = _who(address)
        self.failures.pop((fold(name), who), None)
        spray = self.failures.get(("", who))
        if spray:
            spray.pop()

    def expire(self, now: float) -> None:
        """Drop entries whose every attempt has left the window, oldest first (cheap:
        stops at the first live one)."""
        while self.failures:
            key, times = next(iter(self.failures.items()))
            if times and now - times[-1] < self.window:
                return
            del self.failures[key]


@dataclass(frozen=True, slots=True)
class SignedIn:
    token: str  # for the cookie, once; never stored or logged
    session: Session
    user: User


class SessionService:
    """Sign in, sign out, end sessions: every change audited, every end reaching
    every server's cache (this process's at once through ``on_end``)."""

    def __init__(
        self,
        store: Store,
        *,
        idle: float,
        absolute: float,
        throttle: LoginThrottle,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.idle = idle
        self.absolute = absolute
        self.throttle = throttle
        self.clock = clock
        # token hashes of sessions started or ended here: this process's cache, at once
        self.on_end: list[Callable[[list[str]], None]] = []
        self.checking = 0  # password checks in flight
        # ended elsewhere in the store (by id, by user): read the change log now
        self.on_change: list[Callable[[], Awaitable[object]]] = []

    async def sign_in(
        self, name: str, password: str, address: str, user_agent: str | None = None
    ) -> SignedIn:
        """A new session for ``name``; SignInRefused otherwise. Every attempt is audited
        (never the password)."""
        now = self.clock()
        name = name.strip()[:256]
        if self.throttle.locked(name, address, now):
            await self._audit_attempt(name, address, LOCKED[0])
            raise SignInRefused(*LOCKED)
        if self.checking >= MAX_CHECKING:  # each check is ~50 ms of CPU: bounded
            raise SignInRefused("busy", "Too many sign-ins at once: try again in a moment.")
        self.throttle.attempt(name, address, now)  # counted before any await
        self.checking += 1
        try:
            user = await self.store.find_user(name) if name else None
            stored = user.password_hash if user is not None else None
            good = await verify_password(stored, password)
        finally:
            self.checking -= 1
        if not good or user is None:
            await self._audit_attempt(name, address, WRONG[0])
            raise SignInRefused(*WRONG)
        if user.disabled_at is not None:
            await self._audit_attempt(name, address, "user_disabled")
            raise SignInRefused("user_disabled", "This account is disabled.")
        self.throttle.succeeded(name, address)
        return await self.start(user, address, user_agent, "session.login")

    async def start(
        self, user: User, address: str | None, user_agent: str | None, action: str
    ) -> SignedIn:
        """A new session for ``user`` (a new token every time: no fixation)."""
        now = self.clock()
        token = new_token()
        session = Session(new_session_id(), user.id, now, now, now + self.absolute, None,
                          address, (user_agent or "")[:256] or None)  # fmt: skip
        digest = token_hash(token)
        await self.store.insert_session(session, digest, Audit(user.external_id, action))
        for changed in self.on_end:  # into the cache's filter: found at once, even in a spray
            changed([digest])
        return SignedIn(token, session, user)

    async def sign_out(self, token: str) -> None:
        """End the session of ``token`` (no error if it is unknown or ended)."""
        digest = token_hash(token)
        with contextlib.suppress(NotFound):
            await self.store.revoke_session("", Audit("session", "session.logout"),
                                            token_hash=digest)  # fmt: skip
        for ended in self.on_end:
            ended([digest])

    async def revoke(self, session_id: str, actor: str) -> Session:
        session = await self.store.revoke_session(session_id, Audit(actor, "session.revoke"))
        await self._changed()
        return session

    async def revoke_user(self, user_id: str, actor: str) -> int:
        await self.store.get_user(user_id)  # NotFound for an unknown user
        count = await self.store.revoke_user_sessions(user_id, Audit(actor, "session.revoke_all"))
        await self._changed()
        return count

    async def list(self, user_id: str | None = None) -> list[Session]:
        return await self.store.list_sessions(user_id, now=self.clock())

    async def _changed(self) -> None:
        for changed in self.on_change:
            await changed()

    async def _audit_attempt(self, name: str, address: str, outcome: str) -> None:
        await self.store.record_audit(
            Audit(name or "(empty)", "session.login_failed"), "user", name or "(empty)",
            {"address": address, "reason": outcome},
        )  # fmt: skip
