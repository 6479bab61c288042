"""The decision core: request facts and what the gate resolved in, a Decision out.

Pure: no I/O, no clock of its own, no web framework, no store, no cache. The
gate (:mod:`keystile.gate`) resolves the credential and gathers the limit state,
then calls :meth:`Rules.decide` once; the admin API's own authentication and
``explain`` call the same :meth:`Rules.judge`. Three steps, each a function of
its inputs only:

- :meth:`Rules.screen`: everything decided before a key is looked up (a
  target we can trust, a known method in canonical form, an unambiguous path,
  no unknown method override, no credential copy in the query or a cookie,
  one credential);
- :meth:`Rules.decide` / :meth:`Rules.judge`: the key's state, IP allowlists,
  route and scopes, quotas and rate limits;
- :meth:`Rules.grant`: the headers an allow sends upstream (built once per key
  and route by the serving layer, which keeps the rendered reply).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from typing import NamedTuple
from urllib.parse import quote

from keystile.core import reasons
from keystile.core.aliases import header_key
from keystile.core.clientip import ip_allowed
from keystile.core.cookies import SECURE_NAME, cookie_line, session_token, without
from keystile.core.copies import (
    DEFAULT_CREDENTIAL_COOKIES,
    DEFAULT_CREDENTIAL_PARAMS,
    credential_copies,
)
from keystile.core.credentials import (
    DEFAULT_SOURCES,
    ConflictingCredentials,
    CredentialSource,
    Headers,
    extract,
)
from keystile.core.crossorigin import cross_site
from keystile.core.methods import UnknownOverride, canonical_method, method_overrides
from keystile.core.model import (
    ACTIVE,
    ADMIN_SCOPE,
    ALL_SCOPES,
    DELETED,
    DISABLED,
    EXPIRED,
    SESSION,
    KeyRecord,
    RateInfo,
)
from keystile.core.paths import AmbiguousPath, parse_target
from keystile.core.reasons import Outcome, Reason
from keystile.core.routes import Route, RouteTable

Upstream = tuple[tuple[str, str], ...]
IDENTITY_HEADERS = ("X-Keystile-Key-Id", "X-Keystile-Key-Name", "X-Keystile-Owner",
                    "X-Keystile-Scopes", "X-Keystile-Route", "X-Keystile-User-Id",
                    "X-Keystile-User", "X-Keystile-User-Email", "X-Keystile-User-Role")  # fmt: skip
LOGIN_PATH = "/_keystile/login"
# a token budget's reservation (keystile.tokens); lower case, as gRPC needs it
RESERVATION_HEADER = "x-keystile-reservation"
# Never passed upstream from the client: a proxy credential is the client's, whatever
# it holds; a reservation only keystile hands out.
ALWAYS_STRIPPED = ("proxy-authorization", RESERVATION_HEADER)

_STATE_REASONS = {
    EXPIRED: reasons.EXPIRED_API_KEY,
    DELETED: reasons.INVALID_API_KEY,
    DISABLED: reasons.DISABLED_API_KEY,
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
    trusted: bool = True  # the auth request came from a trusted proxy
    scheme: str | None = None  # "http"/"https" when the proxy says (forward auth)
    # the proxy routes by one host and sends the upstream another than ``host`` (nginx:
    # an absolute-form request line whose host differs from the Host header)
    ambiguous_host: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    reason: Reason | None  # None: allowed
    record: KeyRecord | None = None
    route: Route | None = None
    retry_after: int | None = None
    rate: RateInfo | None = None  # the tightest rate limit, for X-RateLimit-*
    location: str | None = None  # a browser to send to the sign-in page (a denial)
    cookie: str | None = None  # an allow: the Cookie line for the upstream (None: none sent)
    reservation: str | None = None  # an allow: the token budgets' reservation (its report's)

    @property
    def outcome(self) -> Outcome:
        return Outcome.ALLOW if self.reason is None else self.reason.outcome

    @property
    def allowed(self) -> bool:
        return self.reason is None


class Presented(NamedTuple):
    """A request that passed :meth:`Rules.screen`: the key to resolve, and what to judge."""

    token: str
    method: str
    host: str
    path: str
    client_ip: str | None
    overrides: tuple[str, ...] | None = None  # methods an override header or _method= names
    session: bool = False  # the token is a session cookie's, not an API key
    cookie: str | None = None  # the Cookie line for the upstream: keystile's cookie taken out
    target: str = ""  # as sent (where a browser returns after signing in)
    navigation: bool = False  # a browser loading a page (not a fetch)


@dataclass(frozen=True, slots=True)
class SessionRules:
    """How browser sessions are recognised: the cookie, where to sign in, and the
    origins besides the request's own host that may send unsafe requests."""

    cookie: str = SECURE_NAME
    login: str = LOGIN_PATH
    trusted_origins: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Limits:
    """What the gate gathered about a limited key's quotas and rate limits."""

    quota_retry: int | None = None  # a quota is spent: seconds until it resets
    rate_retry: int | None = None  # a rate limit is spent: seconds until one more fits
    rate: RateInfo | None = None
    # token budgets: (the budget's reason, tokens left, seconds until its window resets)
    tokens: tuple[tuple[Reason, int, int], ...] = ()


class Grant(NamedTuple):
    """What an allow sends: headers for the upstream, client headers to remove."""

    upstream: Upstream
    strip: tuple[str, ...]  # lower-case names of headers keystile speaks for but did not set


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
    """One copy of a header pair many keys send alike (scopes, route, credential)."""
    return (name, value)


def identity_headers(record: KeyRecord, route: Route | None) -> list[tuple[str, str]]:
    if record.kind == SESSION:
        return person_headers(record, route)
    headers = [
        ("X-Keystile-Key-Id", record.id),
        ("X-Keystile-Key-Name", _header_value(record.name)),
        _shared("X-Keystile-Scopes", ",".join(record.granted)),
    ]
    if record.owner:
        headers.append(("X-Keystile-Owner", _header_value(record.owner)))
    if record.user_id:
        headers.append(("X-Keystile-User-Id", record.user_id))
    if route is not None:
        headers.append(_shared("X-Keystile-Route", route.name))
    return headers


def person_headers(record: KeyRecord, route: Route | None) -> list[tuple[str, str]]:
    """A signed-in person's identity: who, their email and role (no key id)."""
    assert record.user_id is not None
    headers = [
        ("X-Keystile-User-Id", record.user_id),
        ("X-Keystile-User", _header_value(record.name)),
        _shared("X-Keystile-User-Role", record.role or "member"),
        _shared("X-Keystile-Scopes", ",".join(record.granted)),
    ]
    if record.owner:
        headers.append(("X-Keystile-User-Email", _header_value(record.owner)))
    if route is not None:
        headers.append(_shared("X-Keystile-Route", route.name))
    return headers


def wants_page(method: str, headers: Headers) -> bool:
    """A browser navigating (address bar, link, form), not a script's fetch."""
    if method not in ("GET", "HEAD"):
        return False
    mode = headers.get("sec-fetch-mode")
    if mode is not None:
        return mode.strip().lower() == "navigate"
    accept = headers.get("accept")
    return accept is not None and "text/html" in accept


class Rules:
    """The configured rules (routes, credential sources, path policy), compiled once."""

    def __init__(
        self,
        routes: RouteTable,
        sources: Sequence[CredentialSource] = DEFAULT_SOURCES,
        *,
        semicolons: bool = False,
        credential_params: frozenset[str] = DEFAULT_CREDENTIAL_PARAMS,
        credential_cookies: frozenset[str] = DEFAULT_CREDENTIAL_COOKIES,
        sessions: SessionRules = SessionRules(),
        token_estimate: int = 0,
    ) -> None:
        self.routes = routes
        self.token_estimate = token_estimate  # a route's when it names none
        self.sessions = sessions
        self.sources = tuple(sources)
        self.semicolons = semicolons  # ';' in a path is a plain character upstream
        self.credential_params = credential_params
        self.credential_cookies = credential_cookies
        self._strips: dict[frozenset[str], tuple[str, ...]] = {}  # one copy of each
        # Every header keystile speaks for: identity, the client's credential, and
        # whatever a route injects. A client's copy of any of them never passes.
        self.managed = frozenset(
            name.lower()
            for name in (*IDENTITY_HEADERS, *(s.header for s in self.sources),
                         *routes.injected_names(), *ALWAYS_STRIPPED)
        )  # fmt: skip

    def imitates_managed(self, headers: Headers) -> bool:
        """A header such as ``X_Keystile_Owner`` or ``X.Keystile.Owner``: WSGI, CGI and
        PHP upstreams read it as ``X-Keystile-Owner``, and not every proxy drops it
        (Caddy and Envoy pass it on; see :mod:`keystile.aliases`)."""
        managed = self.managed
        for name in headers:
            key = header_key(name)
            if key in managed and key != name.lower():
                return True
        return False

    def screen(self, facts: Facts) -> Decision | Presented:
        """Everything before the key lookup: a denial, or the request to judge."""
        if not facts.trusted:
            return refusal(reasons.UNTRUSTED_PEER)
        if facts.target is None:
            return refusal(reasons.UNKNOWN_TARGET)
        if facts.ambiguous_host:
            return refusal(reasons.AMBIGUOUS_HOST)
        method = canonical_method(facts.method)
        if method is None:
            return refusal(reasons.BAD_METHOD)
        try:
            target = parse_target(facts.target, semicolons=self.semicolons)
        except AmbiguousPath:
            return refusal(reasons.AMBIGUOUS_PATH)
        headers = facts.headers
        try:
            overrides = method_overrides(headers, target.query)
        except UnknownOverride:
            return refusal(reasons.METHOD_OVERRIDE)
        if credential_copies(target.query, headers, params=self.credential_params,
                             cookies=self.credential_cookies) is not None:  # fmt: skip
            return refusal(reasons.CREDENTIAL_COPY)
        if self.imitates_managed(headers):
            return refusal(reasons.IMITATED_HEADER)
        try:
            token = extract(headers, self.sources)
        except ConflictingCredentials:
            return refusal(reasons.CONFLICTING_KEYS)
        line = cookie_line(headers)
        name = self.sessions.cookie
        # the Cookie line for the upstream, keystile's own cookie taken out
        cookie = None if line is None else without(line, name)
        if token is not None:  # an API key wins over a session cookie (which never passes)
            return Presented(token, method, facts.host, target.path, facts.client_ip,
                             overrides, cookie=cookie)  # fmt: skip
        session = session_token(line, name)
        page = wants_page(method, headers)
        if session is not None:
            if cross_site(method, facts.host, headers, self.sessions.trusted_origins,
                          overrides or ()):  # fmt: skip
                return refusal(reasons.CROSS_SITE_REQUEST)
            return Presented(session, method, facts.host, target.path, facts.client_ip,
                             overrides, True, cookie, facts.target, page)  # fmt: skip
        route = self.routes.match(method, facts.host, target.path)
        if route is not None and route.sessions:
            return self.sign_in(reasons.LOGIN_REQUIRED, facts.target, page)
        return refusal(reasons.MISSING_API_KEY)

    def sign_in(self, reason: Reason, target: str, page: bool) -> Decision:
        """A browser without a usable session: to the sign-in page (and back to
        ``target`` after), or a plain 401 for a script. The Location is a path, never
        built from a host the client named (the shipped Traefik config keeps it as it
        is with ``preserveLocationHeader``)."""
        if not page:
            return refusal(reason)
        login = f"{self.sessions.login}?rd={quote(target, safe='/')}"
        return Decision(reason, location=login)

    def decide(
        self,
        request: Presented,
        record: KeyRecord | None,
        limits: Limits | None,
        now: float,
        invalid_retry: int | None = None,
    ) -> Decision:
        """The decision for a screened request whose key resolved to ``record``
        (None: no such key). ``limits``: what the gate gathered, for a limited key;
        ``invalid_retry``: the client's address sent too many unknown keys."""
        if request.session:
            if record is None or record.kind != SESSION:
                return self.sign_in(reasons.INVALID_SESSION, request.target, request.navigation)
            if record.state(now) != ACTIVE:
                return self.sign_in(reasons.SESSION_EXPIRED, request.target, request.navigation)
        elif record is None:
            if invalid_retry is not None:
                return Decision(reasons.INVALID_KEYS, retry_after=invalid_retry)
            return refusal(reasons.INVALID_API_KEY)
        decision = self.judge(record, request.method, request.host, request.path,
                              request.client_ip, limits, now)  # fmt: skip
        if decision.reason is None and request.overrides:
            # Frameworks that honour an override perform that method instead: the
            # request must be allowed as each method it may turn out to be.
            for method in request.overrides:
                if method != request.method:
                    other = self.judge(record, method, request.host, request.path,
                                       request.client_ip, None, now)  # fmt: skip
                    if other.reason is not None:
                        return other
        if decision.reason is None and request.cookie is not None:
            return replace(decision, cookie=request.cookie)
        return decision

    def judge(
        self,
        record: KeyRecord,
        method: str,
        host: str,
        path: str,
        client_ip: str | None,
        limits: Limits | None,
        now: float,
    ) -> Decision:
        """Apply the key's state, allowlists, route, scopes and limits to one request.

        A limited key without ``limits`` gathered is judged as if its limits were
        not spent (what ``explain`` and the admin API's own caller check want)."""
        unusable = self.unusable(record, client_ip, now)
        if unusable is not None:
            return unusable
        route = self.routes.match(method, host, path)
        if record.kind == SESSION and (route is None or not route.sessions):
            return Decision(reasons.SESSION_NOT_ALLOWED, record, route)
        if route is None:
            if not self.routes.allow_unmatched:
                return Decision(reasons.ROUTE_NOT_ALLOWED, record)
        elif not has_scopes(record.granted, route.scopes):
            return Decision(reasons.INSUFFICIENT_SCOPE, record, route)
        elif route.slots:
            refused = self.credential_refusal(record, route)
            if refused is not None:
                return Decision(refused, record, route)
        return self.limit(record, route, limits)

    @staticmethod
    def credential_refusal(record: KeyRecord, route: Route) -> Reason | None:
        """Why ``route`` cannot send an upstream credential for ``record``: bound (the
        key, else its team) to one the route does not list, or unbound and no default."""
        binding = record.bound_credential
        for _, slot in route.slots:
            if slot.pick(binding) is None:
                return reasons.NO_CREDENTIAL if binding is None else reasons.CREDENTIAL_NOT_ALLOWED
        return None

    def admit(
        self, record: KeyRecord, client_ip: str | None, limits: Limits | None, now: float
    ) -> Decision:
        """Whether the key may be used at all (state, allowlists, limits), whatever the
        route: how keystile judges a caller of its own admin API."""
        unusable = self.unusable(record, client_ip, now)
        return unusable if unusable is not None else self.limit(record, None, limits)

    @staticmethod
    def unusable(record: KeyRecord, client_ip: str | None, now: float) -> Decision | None:
        """The denial for a key that is not active or not allowed from ``client_ip``."""
        state = record.state(now)
        if state != ACTIVE:
            return Decision(_STATE_REASONS.get(state, reasons.REVOKED_API_KEY), record)
        if not ip_allowed(record, client_ip):
            return Decision(reasons.IP_NOT_ALLOWED, record)
        return None

    def estimate(self, route: Route | None) -> int:
        """Tokens a request on ``route`` reserves until its usage is reported."""
        if route is not None and route.token_estimate is not None:
            return route.token_estimate
        return self.token_estimate

    def limit(self, record: KeyRecord, route: Route | None, limits: Limits | None) -> Decision:
        """Quotas first, then token budgets, then rate limits; an allow when none is
        spent. A token budget is spent when the route's estimate (at least one
        token) no longer fits in what is left of it."""
        if limits is None:
            return Decision(None, record, route)
        if limits.quota_retry is not None:
            return Decision(reasons.QUOTA_EXCEEDED, record, route, limits.quota_retry)
        if limits.tokens:
            estimate = self.estimate(route)
            for reason, left, retry in limits.tokens:
                if left < max(estimate, 1):
                    return Decision(reason, record, route, retry)
        if limits.rate_retry is not None:
            return Decision(reasons.RATE_LIMITED, record, route, limits.rate_retry, limits.rate)
        return Decision(None, record, route, rate=limits.rate)

    def grant(
        self, record: KeyRecord, route: Route | None, reservation: str | None = None
    ) -> Grant:
        """The headers an allow of ``record`` on ``route`` sends (with a token
        budget's ``reservation``), and the client headers to remove: every managed
        header this allow does not set."""
        headers = identity_headers(record, route)
        if reservation is not None:
            headers.append((RESERVATION_HEADER, reservation))
        if route is not None:
            headers.extend(_shared(name, secret.value) for name, secret in route.inject)
            binding = record.bound_credential
            for name, slot in route.slots:
                chosen = slot.pick(binding)
                if chosen is not None:  # judge denied it otherwise
                    headers.append(_shared(name, chosen.value))
        unset = self.managed - {name.lower() for name, _ in headers}
        strip = self._strips.setdefault(unset, tuple(sorted(unset)))
        return Grant(tuple(headers), strip)
