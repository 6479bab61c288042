"""The decision core: request facts in, a Decision out. No web framework here.

Every adapter (nginx, Envoy, forward auth) turns its proxy's request into
:class:`Facts` and renders the :class:`Decision` in its proxy's dialect; the
rules live only here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from urllib.parse import quote

from keystile import reasons
from keystile.cache import CachedLookup
from keystile.credentials import (
    DEFAULT_SOURCES,
    ConflictingCredentials,
    CredentialSource,
    Headers,
    extract,
)
from keystile.errors import StoreError
from keystile.paths import AmbiguousPath, parse_target
from keystile.policy import RateInfo, RateLimiter, SlidingWindowLimiter, ip_allowed
from keystile.quotas import Quotas
from keystile.reasons import Outcome, Reason
from keystile.routes import Route, RouteTable
from keystile.static_keys import ADMIN_SCOPE, ALL_SCOPES
from keystile.store import KeyRecord, Unknown
from keystile.store.records import ACTIVE, DELETED, EXPIRED

Upstream = tuple[tuple[str, str], ...]
IDENTITY_HEADERS = ("X-Keystile-Key-Id", "X-Keystile-Key-Name", "X-Keystile-Owner",
                    "X-Keystile-Scopes", "X-Keystile-Route")  # fmt: skip

_STATE_REASONS = {
    EXPIRED: reasons.EXPIRED_API_KEY,
    DELETED: reasons.INVALID_API_KEY,
}


@dataclass(slots=True)
class Facts:
    """What an adapter learned about the original request."""

    adapter: str
    method: str
    host: str
    target: str | None  # path with query, as the client sent it; None if unknown
    headers: Headers
    client_ip: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    reason: Reason | None  # None: allowed
    record: KeyRecord | None = None
    route: Route | None = None
    upstream: Upstream = ()  # headers for the upstream request
    strip: tuple[str, ...] = ()  # client headers the upstream must not get (lower-case)
    retry_after: int | None = None
    rate: RateInfo | None = None  # the tightest rate limit, for X-RateLimit-*

    @property
    def outcome(self) -> Outcome:
        return Outcome.ALLOW if self.reason is None else self.reason.outcome

    @property
    def allowed(self) -> bool:
        return self.reason is None


@cache
def refusal(reason: Reason) -> Decision:
    """The denial that names no key: one shared object per reason (decisions are frozen)."""
    return Decision(reason)


def has_scopes(granted: Sequence[str], required: frozenset[str]) -> bool:
    """All required scopes are granted; ``*`` grants every scope except ``admin``."""
    if not required:
        return True
    if ALL_SCOPES in granted:
        return all(scope != ADMIN_SCOPE or ADMIN_SCOPE in granted for scope in required)
    return required.issubset(granted)


def _header_value(text: str) -> str:
    """Header-safe text: non-ASCII and control characters percent-encoded."""
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe=" !#$&'()*+,-./:;=?@[]^_`{|}~")


@lru_cache(maxsize=4096)
def _shared(name: str, value: str) -> tuple[str, str]:
    """One copy of a header pair many keys send alike (scopes, route, credential):
    100k cached keys each holding their own would cost megabytes."""
    return (name, value)


def identity_headers(record: KeyRecord, route: Route | None) -> list[tuple[str, str]]:
    headers = [
        ("X-Keystile-Key-Id", record.id),
        ("X-Keystile-Key-Name", _header_value(record.name)),
        _shared("X-Keystile-Scopes", ",".join(record.granted)),
    ]
    if record.owner:
        headers.append(("X-Keystile-Owner", _header_value(record.owner)))
    if route is not None:
        headers.append(_shared("X-Keystile-Route", route.name))
    return headers


class Decider:
    """Applies keys, routes and scopes to one request at a time."""

    def __init__(
        self,
        keys: CachedLookup,
        routes: RouteTable,
        sources: Sequence[CredentialSource] = DEFAULT_SOURCES,
        clock: Callable[[], float] = time.time,
        limiter: RateLimiter | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.keys = keys
        self.routes = routes
        self.sources = tuple(sources)
        self.clock = clock
        self.limiter = limiter if limiter is not None else SlidingWindowLimiter()
        self.quotas = quotas if quotas is not None else Quotas(keys.lookup.store)
        self._strips: dict[frozenset[str], tuple[str, ...]] = {}  # one copy of each
        # Every header keystile speaks for: identity, the client's credential, and
        # whatever a route injects. A client's copy of any of them never passes.
        self.managed = frozenset(
            name.lower()
            for name in (*IDENTITY_HEADERS, *(s.header for s in self.sources),
                         *routes.injected_names())
        )  # fmt: skip

    def imitates_managed(self, headers: Headers) -> bool:
        """A header such as ``X_Keystile_Owner``: some upstreams (WSGI, CGI) read it as
        ``X-Keystile-Owner``, and not every proxy drops it (Caddy, Traefik)."""
        for name in headers:
            if "_" in name and name.lower().replace("_", "-") in self.managed:
                return True
        return False

    def allow(self, record: KeyRecord, route: Route | None) -> Decision:
        """The allow for this key on this route: identity and injected headers, and
        the managed headers left unset. Built once per record and route and kept
        on the record; policy is still evaluated on every request."""
        memo = record.memo.get(route)
        if memo is not None:
            return memo  # type: ignore[no-any-return]
        headers = identity_headers(record, route)
        if route is not None:
            headers.extend(_shared(name, secret.value) for name, secret in route.inject)
        unset = self.managed - {name.lower() for name, _ in headers}
        strip = self._strips.setdefault(unset, tuple(sorted(unset)))
        decision = Decision(None, record, route, tuple(headers), strip)
        record.memo[route] = decision
        return decision

    def screen(self, facts: Facts) -> Decision | tuple[str, str]:
        """Everything before the key lookup: a denial, or the (token, path) to judge."""
        if facts.target is None:
            return refusal(reasons.UNKNOWN_TARGET)
        try:
            path = parse_target(facts.target).path
        except AmbiguousPath:
            return refusal(reasons.AMBIGUOUS_PATH)
        if self.imitates_managed(facts.headers):
            return refusal(reasons.IMITATED_HEADER)
        try:
            token = extract(facts.headers, self.sources)
        except ConflictingCredentials:
            return refusal(reasons.CONFLICTING_KEYS)
        if token is None:
            return refusal(reasons.MISSING_API_KEY)
        return token, path

    def decide_now(self, facts: Facts) -> Decision | Unknown:
        """The decision from memory alone; ``UNKNOWN`` when it needs the store
        (a cache miss, a quota period not read yet): then await :meth:`decide`."""
        screened = self.screen(facts)
        if isinstance(screened, Decision):
            return screened
        token, path = screened
        record = self.keys.find_now(token)
        if record is None:
            return refusal(reasons.INVALID_API_KEY)
        if isinstance(record, Unknown):
            return record
        return self.judge_now(record, facts.method, facts.host, path, facts.client_ip)

    async def decide(self, facts: Facts) -> Decision:
        screened = self.screen(facts)
        if isinstance(screened, Decision):
            return screened
        token, path = screened
        try:
            record = await self.keys.find(token)
        except StoreError:
            return refusal(reasons.UNAVAILABLE)
        if record is None:
            return refusal(reasons.INVALID_API_KEY)
        return await self.judge(record, facts.method, facts.host, path, facts.client_ip)

    async def judge(
        self,
        record: KeyRecord,
        method: str,
        host: str,
        path: str,
        client_ip: str | None,
        dry_run: bool = False,
    ) -> Decision:
        """Apply the key's state, allowlists, routes, scopes and limits to one request.

        ``dry_run`` (explain) decides without counting against limits or quotas.
        """
        while True:
            decision = self.judge_now(record, method, host, path, client_ip, dry_run)
            if not isinstance(decision, Unknown):
                return decision
            try:  # a quota period not in memory yet
                await self.quotas.load(record, self.clock())
            except StoreError:
                return Decision(reasons.UNAVAILABLE, record)

    def judge_now(
        self,
        record: KeyRecord,
        method: str,
        host: str,
        path: str,
        client_ip: str | None,
        dry_run: bool = False,
    ) -> Decision | Unknown:
        """:meth:`judge` from memory alone; ``UNKNOWN`` when a quota needs the store."""
        now = self.clock()
        state = record.state(now)
        if state != ACTIVE:
            return Decision(_STATE_REASONS.get(state, reasons.REVOKED_API_KEY), record)
        team = record.team
        if (record.allowed_ips is not None or (team is not None and team.allowed_ips is not None)
                ) and not ip_allowed(record, client_ip):  # fmt: skip
            return Decision(reasons.IP_NOT_ALLOWED, record)
        route = self.routes.match(method, host, path)
        if route is None:
            if not self.routes.allow_unmatched:
                return Decision(reasons.ROUTE_NOT_ALLOWED, record)
        elif not has_scopes(record.granted, route.scopes):
            return Decision(reasons.INSUFFICIENT_SCOPE, record, route)
        allowed = self.allow(record, route)
        if record.limited:
            return self.limited(allowed, record, route, now, dry_run)
        return allowed

    def limited(
        self, allowed: Decision, record: KeyRecord, route: Route | None, now: float, dry_run: bool
    ) -> Decision | Unknown:
        """Quotas first (they count nothing), then rate limits (which count the request)."""
        if record.has_quotas:
            spent = self.quotas.check_now(record, now)
            if isinstance(spent, Unknown):
                return spent
            if spent is not None:
                return Decision(
                    reasons.QUOTA_EXCEEDED, record, route, retry_after=spent.retry_after
                )
        verdict = self.limiter.hit(record, now, commit=not dry_run)
        if not verdict.allowed:
            return Decision(reasons.RATE_LIMITED, record, route,
                            retry_after=verdict.retry_after, rate=verdict.rate)  # fmt: skip
        if record.has_quotas and not dry_run:
            self.quotas.count(record, now)
        if verdict.rate is None:
            return allowed
        return Decision(None, record, route, allowed.upstream, allowed.strip, rate=verdict.rate)
