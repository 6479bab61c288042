"""The auth request path, the same whichever server carries it (HTTP or gRPC).

    listener (parse) -> adapter (proxy dialect -> Facts) -> Authorizer (resolve
    the key: cache hit at once, one awaited store read on a miss; gather limit
    state) -> core Rules.decide (pure) -> Authorizer (count what was allowed)
    -> adapter (render) -> listener (write)

With shared limits (Redis, :mod:`keystile.shared_limits`) checking and counting
are one step, so the order turns: the core first judges a limited key as if no
limit were spent, and only a request that only a limit can still refuse goes
to Redis (a request refused for its scope is never counted), then the core
again with what Redis said.

:class:`Authorizer` is the one place that resolves a credential and gathers
what policy needs; the admin API's own caller check and ``explain`` use it
too. One :class:`Gate` per adapter adds the proxy dialect and the bookkeeping
(metrics, usage, denial log, in memory only): :class:`Judge` the part that
knows no wire format (the gRPC listener's), :class:`Gate` the HTTP dialects'.
``Judge.judge`` and ``Gate.answer`` never raise: a fault of keystile's own is
a 503 ``auth_unavailable`` with the same body on every server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from keystile.config import Settings
from keystile.core import reasons
from keystile.core.clientip import TrustedProxies
from keystile.core.credentials import ConflictingCredentials, Headers, extract
from keystile.core.decide import Decision, Facts, Limits, Presented, Rules, SessionRules, refusal
from keystile.core.errors import LimitsUnavailable, StoreError, StoreUnavailable
from keystile.core.flights import within
from keystile.core.model import KeyRecord
from keystile.limits.policy import InvalidKeyThrottle, RateCheck, RateLimiter, SlidingWindowLimiter
from keystile.limits.quotas import Quotas
from keystile.limits.shared_budgets import SharedBudgets
from keystile.limits.shared_limits import SharedLimits
from keystile.limits.tokens import TokenBudgets
from keystile.limits.usage import UsageMeter
from keystile.observe.logs import DenialLog
from keystile.observe.metrics import Metrics
from keystile.serve.adapters import Adapter
from keystile.serve.adapters.base import Inbound, Reply, rate_headers
from keystile.serve.cache import CachedLookup, Entry

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Answer = tuple[Decision, Entry | None]
log = logging.getLogger("keystile.gate")
QUOTA_READ_TIMEOUT = 0.5  # seconds: a quota's stored usage not read by then fails closed (503)


def _quiet(task: asyncio.Future[Any]) -> None:
    """A background step whose failure is logged elsewhere (Redis outages are)."""
    if not task.cancelled():
        task.exception()


def rules_of(settings: Settings) -> Rules:
    """The core's rules as the settings configure them."""
    sessions = SessionRules(settings.session_cookie,
                            trusted_origins=settings.session_trusted_origins)  # fmt: skip
    return Rules(settings.routes, settings.credential_headers,
                 semicolons=settings.path_semicolons,
                 credential_params=settings.credential_params,
                 credential_cookies=settings.credential_cookies, sessions=sessions,
                 token_estimate=settings.token_estimate)  # fmt: skip


class Authorizer:
    """Resolves the key and the limit state, asks the core, counts an allow."""

    def __init__(
        self,
        rules: Rules,
        keys: CachedLookup,
        limiter: RateLimiter | None = None,
        quotas: Quotas | None = None,
        clock: Callable[[], float] = time.time,
        invalid: InvalidKeyThrottle | None = None,
        sessions: CachedLookup | None = None,
        shared: SharedLimits | None = None,
        budgets: TokenBudgets | None = None,
    ) -> None:
        self.rules = rules
        self.budgets = budgets  # None: token budgets are not enforced (tests of other parts)
        # with shared limits, the budgets are shared in the same Redis
        self.shared_budgets = (None if shared is None or budgets is None
                               else SharedBudgets(shared, budgets))  # fmt: skip
        self.shared = shared  # None: limits are counted in this process only
        self.keys = keys
        self.sessions = sessions  # None: no session is ever found
        self.invalid = invalid  # None: unknown keys are never throttled
        self.limiter = limiter if limiter is not None else SlidingWindowLimiter()
        self.quotas = quotas if quotas is not None else Quotas(keys.lookup.store)
        self.clock = clock

    async def authorize(self, facts: Facts) -> Answer:
        """The decision for one auth request, and the cache entry of its key."""
        screened = self.rules.screen(facts)
        if isinstance(screened, Decision):
            return screened, None
        lookup = self.sessions if screened.session else self.keys  # a cookie: a session
        entry = None if lookup is None else await lookup.find(screened.token)
        now = self.clock()
        if entry is None:
            if screened.session:  # to the sign-in page (no unknown-key throttle: no key)
                return self.rules.decide(screened, None, None, now), None
            return self.unknown(screened, now), None
        record = entry.record
        if not record.limited:
            return self.rules.decide(screened, record, None, now), entry
        budgets = self.budgets if record.has_budgets else None
        if budgets is not None:
            await self.load_budgets(budgets, record, now)
        if self.shared is not None:
            return await self.shared_path(screened, record, now), entry
        limits, check = await self.limits(record, now)
        if budgets is not None:  # no await from here to the reservation
            limits = replace(limits, tokens=budgets.state(record, now))
        decision = self.rules.decide(screened, record, limits, now)
        if decision.reason is None:
            self.count(record, check, now)
            decision = self.reserve(decision, now)
        return decision, entry

    async def shared_path(self, screened: Presented, record: KeyRecord, now: float) -> Decision:
        """Limits in Redis: the core first judges all but the limits; then the token
        budgets reserve (in Redis), then rate limits and quotas are checked and
        counted; a refusal there gives the reservation back."""
        decision = self.rules.decide(screened, record, None, now)
        if decision.reason is not None:
            return decision
        token, shared = None, self.shared_budgets
        if record.has_budgets and shared is not None:
            route = decision.route
            token, spent = await shared.reserve(record, "" if route is None else route.name,
                                                self.rules.estimate(route), now)  # fmt: skip
            if token is None:  # refused by a budget: unless a quota refuses first, as the
                # core orders them (quotas, budgets, rate limits) on the per-process path too
                if record.has_quotas:
                    spent = replace(await self.look_shared(record, now), tokens=spent.tokens)
                return self.rules.decide(screened, record, spent, now)
        try:
            decision = self.rules.decide(screened, record, await self.take(record, now), now)
        except BaseException:
            if token is not None:
                self._give_back(token, now)
            raise
        if token is None:
            return decision
        if decision.reason is not None:  # a rate limit or quota refused after all
            self._give_back(token, now)
            return decision
        return replace(decision, reservation=token)

    def _give_back(self, token: str, now: float) -> None:
        """A reservation of a request refused after all: reported as 0 tokens."""
        assert self.shared_budgets is not None
        task = asyncio.ensure_future(self.shared_budgets.report(token, 0, now))
        task.add_done_callback(_quiet)

    @property
    def ledger(self) -> SharedBudgets | TokenBudgets | None:
        """Where token reports go: Redis's shared budgets, else this process's."""
        return self.shared_budgets if self.shared_budgets is not None else self.budgets

    async def load_budgets(self, budgets: TokenBudgets, record: KeyRecord, now: float) -> None:
        """Read the stored tokens of the key's day and month windows not in memory yet
        (bounded like a key lookup: fail closed)."""
        if not budgets.loaded(record, now):
            try:
                await within(budgets.load(record, now), QUOTA_READ_TIMEOUT)
            except TimeoutError:
                raise StoreUnavailable("reading stored tokens for a budget timed out") from None

    def reserve(self, decision: Decision, now: float) -> Decision:
        """An allow of a key with token budgets: its estimate held, the token attached."""
        record, budgets = decision.record, self.budgets
        if decision.reason is not None or record is None or budgets is None:
            return decision
        if not record.has_budgets:
            return decision
        route = decision.route
        token = budgets.reserve(record, "" if route is None else route.name,
                                self.rules.estimate(route), now)  # fmt: skip
        return replace(decision, reservation=token)

    def unknown(self, request: Presented, now: float) -> Decision:
        """An unknown key: 401, or 429 once its address has sent too many."""
        throttle = self.invalid
        if throttle is None:
            return self.rules.decide(request, None, None, now)
        decision = self.rules.decide(request, None, None, now,
                                     throttle.retry_after(request.client_ip, now))  # fmt: skip
        throttle.count(request.client_ip, now)
        return decision

    async def limits(self, record: KeyRecord, now: float) -> tuple[Limits, RateCheck]:
        """A limited key's quota and rate-limit state, reading stored usage once
        per period. Counts nothing: :meth:`count` does, once the core allowed."""
        if record.has_quotas:
            await self.load_quotas(record, now)
        return self.local_limits(record, now)

    async def load_quotas(self, record: KeyRecord, now: float) -> None:
        """Read the stored usage of the key's quota periods not in memory yet."""
        for _ in range(3):  # a concurrent load may have dropped ours (memory cap)
            if self.quotas.loaded(record, now):
                return
            try:  # once per key and period; bounded like a key lookup (fail closed)
                await within(self.quotas.load(record, now), QUOTA_READ_TIMEOUT)
            except TimeoutError:
                raise StoreUnavailable("reading stored usage for a quota timed out") from None

    async def looked(self, record: KeyRecord, now: float) -> Limits | None:
        """A limited key's limits as they stand, counting nothing (``explain``): read
        as :meth:`authorize` reads them (stored usage loaded, Redis asked when limits
        are shared), token budgets included. None for a key without limits."""
        if not record.limited:
            return None
        budgets = self.budgets if record.has_budgets else None
        if budgets is not None:
            await self.load_budgets(budgets, record, now)
        if self.shared is None:
            limits = (await self.limits(record, now))[0]
        else:
            limits = await self.look_shared(record, now)
        if budgets is not None:
            limits = replace(limits, tokens=budgets.state(record, now))
        return limits

    async def look_shared(self, record: KeyRecord, now: float) -> Limits:
        """The key's quotas and rate limits in Redis, counting nothing (with the local
        fallback when Redis fails and ``redis.unavailable = local``)."""
        shared = self.shared
        assert shared is not None
        if record.has_quotas:
            await self.load_quotas(record, now)  # where Redis starts a quota it lacks
        try:
            return await shared.take(record, now, self.quotas.used, look=True)
        except LimitsUnavailable:
            if not shared.fallback:
                raise
            return self.local_limits(record, now)[0]

    def local_limits(self, record: KeyRecord, now: float) -> tuple[Limits, RateCheck]:
        """This process's view of the key's limits (quotas loaded), counting nothing."""
        quota_retry = self.quotas.spent(record, now) if record.has_quotas else None
        check = self.limiter.check(record, now)
        return Limits(quota_retry, check.retry_after, check.rate), check

    async def take(self, record: KeyRecord, now: float) -> Limits:
        """Shared limits: check and count in Redis in one step, for a request that
        only a limit can still refuse (the caller asked the core first).

        Also counted in this process, so that quota counters Redis lost (a restart)
        start again from what this process knows, and the local fallback
        (``redis.unavailable = local``) from what it admitted. Redis failing:
        :class:`LimitsUnavailable` (a 503), or with the fallback this process's limits."""
        shared = self.shared
        assert shared is not None
        if record.has_quotas:
            await self.load_quotas(record, now)  # where Redis starts a quota it lacks
        try:
            limits = await shared.take(record, now, self.quotas.used)
        except LimitsUnavailable:
            if not shared.fallback:
                raise
            limits, check = self.local_limits(record, now)
        else:
            check = self.limiter.check(record, now)
        if limits.quota_retry is None and limits.rate_retry is None:
            self.count(record, check, now)
        return limits

    def count(self, record: KeyRecord, check: RateCheck, now: float) -> None:
        """Count an allowed request against the key's limits (no await since :meth:`limits`)."""
        self.limiter.take(check)
        if record.has_quotas:
            self.quotas.count(record, now)

    async def caller(self, headers: Headers, client_ip: str | None) -> Answer:
        """Who presents the key in ``headers`` to keystile itself (the admin API):
        the same state, allowlist and limits as on the auth path, no route."""
        try:
            token = extract(headers, self.rules.sources)
        except ConflictingCredentials:
            return refusal(reasons.CONFLICTING_KEYS), None
        if token is None:
            return refusal(reasons.MISSING_API_KEY), None
        entry = await self.keys.find(token)
        if entry is None:
            return refusal(reasons.INVALID_API_KEY), None
        return await self.admit(entry.record, client_ip), entry

    async def admit(self, record: KeyRecord, client_ip: str | None) -> Decision:
        """Whether ``record`` (a key, or a signed-in person's session) may use keystile
        itself from ``client_ip``: state, the key's and its team's allowlists, and its
        limits (counted), as on the auth path but for no route. Every door that is
        not a proxied request asks here: the admin API, the UI, the self-service page."""
        now = self.clock()
        if record.limited and self.shared is not None:  # as authorize: limits last
            decision = self.rules.admit(record, client_ip, None, now)
            if decision.reason is None:
                decision = self.rules.admit(record, client_ip, await self.take(record, now), now)
            return decision
        limits, check = await self.limits(record, now) if record.limited else (None, None)
        decision = self.rules.admit(record, client_ip, limits, now)
        if decision.reason is None and check is not None:
            self.count(record, check, now)
        return decision


class Judge:
    """One dialect's half of the path that knows no wire format: Facts in, the
    decision out, booked (metrics, usage, denial log). The gRPC listener uses it
    as it is; :class:`Gate` adds the HTTP dialects' parsing and rendering."""

    __slots__ = ("authorizer", "count", "denials", "observe", "rules")

    def __init__(
        self,
        name: str,
        authorizer: Authorizer,
        metrics: Metrics,
        usage: UsageMeter,
        denials: DenialLog,
    ) -> None:
        self.authorizer = authorizer
        self.rules = authorizer.rules
        self.observe = metrics.decision_observer(name)
        self.count = usage.record
        self.denials = denials

    async def judge(self, facts: Facts) -> Answer:
        """The decision on what a dialect read; waits only when the store must be
        asked. Never raises."""
        started = time.perf_counter()
        try:
            answer = await self.authorizer.authorize(facts)
        except (Exception, asyncio.CancelledError) as exc:
            answer = failed(exc)
        return self.book(answer, facts, started)

    def book(self, answer: Answer, facts: Facts | None, started: float) -> Answer:
        """Count and log a decision; the answer as it came."""
        decision = answer[0]
        self.observe(decision, time.perf_counter() - started)
        self.count(decision, time.time())
        if decision.reason is not None and facts is not None:
            self.denials(facts, decision)
        return answer


def failed(exc: BaseException) -> Answer:
    """The 503 for a fault of keystile's own (logged; called inside ``except``).

    A cancellation is answered too (a read the request waited on was abandoned):
    every request gets exactly one answer. Only when the request's own task is
    being cancelled (shutdown, the client gone) does it go on as a cancellation."""
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise exc
        log.warning("a read the auth request waited on was cancelled; refused (503)")
        return refusal(reasons.STORE_UNAVAILABLE), None
    if isinstance(exc, LimitsUnavailable):  # logged where it happened, once a minute
        return refusal(reasons.LIMITS_UNAVAILABLE), None
    if isinstance(exc, StoreError):
        log.warning("store unavailable; auth request refused (503): %s", exc)
        return refusal(reasons.STORE_UNAVAILABLE), None
    log.exception("auth request failed; refused (503)")
    return refusal(reasons.INTERNAL_ERROR), None


class Gate(Judge):
    """One HTTP adapter's request path: :class:`Inbound` in, a :class:`Reply` out."""

    __slots__ = ("adapter", "facts", "render", "trusted")

    def __init__(
        self,
        adapter: Adapter,
        authorizer: Authorizer,
        metrics: Metrics,
        usage: UsageMeter,
        trusted: TrustedProxies,
        denials: DenialLog,
    ) -> None:
        super().__init__(adapter.name, authorizer, metrics, usage, denials)
        self.adapter = adapter
        self.facts = adapter.facts
        self.render = adapter.render
        self.trusted = trusted

    async def answer(self, request: Inbound) -> Answer:
        """The whole path; waits only when the store must be asked. Never raises.

        :meth:`Judge.judge` with the parsing inside its ``try`` (one frame less
        on the listener's fast path than awaiting it)."""
        started = time.perf_counter()
        facts: Facts | None = None
        try:
            facts = self.facts(request, self.trusted)
            answer = await self.authorizer.authorize(facts)
        except (Exception, asyncio.CancelledError) as exc:
            answer = failed(exc)
        return self.book(answer, facts, started)

    def reply(self, decision: Decision) -> Reply:
        """The adapter's reply, with ``X-RateLimit-*`` on an allow a rate limit applied to."""
        record = decision.record
        if decision.reason is None and record is not None:
            grant = self.rules.grant(record, decision.route, decision.reservation)
            reply = self.render(decision, grant)
            if decision.rate is not None:
                reply = Reply(reply.status, [*reply.headers, *rate_headers(decision)], reply.body)
            return reply
        return self.render(decision, None)


GATES = web.AppKey("gates", dict[str, Gate])


def aiohttp_handler(adapter: Adapter) -> Handler:
    """The adapter's endpoint as an aiohttp handler (its gate exists once the store is open)."""
    name = adapter.name

    async def handle(request: web.Request) -> web.Response:
        gate = request.app[GATES][name]
        inbound = Inbound(request.method, request.raw_path, request.host, request.headers,
                          request.remote)  # fmt: skip
        decision, _ = await gate.answer(inbound)
        reply = gate.reply(decision)
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    return handle
