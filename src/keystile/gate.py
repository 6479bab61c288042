"""The auth request path, the same whichever HTTP server carries it.

One :class:`Gate` per adapter: facts from the request, the decision, the reply,
and the bookkeeping (metrics, usage, denial log) kept in memory only. The main
listener answers auth requests straight off the socket (:mod:`keystile.wire`)
and hands everything else to aiohttp, whose handlers use the same gates.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from keystile.adapters import Adapter
from keystile.adapters.base import Inbound, Reply, rate_headers
from keystile.clientip import TrustedProxies
from keystile.decide import Decider, Decision, Facts
from keystile.logs import DenialLog
from keystile.metrics import Metrics
from keystile.usage import UsageMeter

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gate:
    """One adapter's request path."""

    __slots__ = ("adapter", "count", "decider", "denials", "facts", "observe", "render", "trusted")

    def __init__(
        self,
        adapter: Adapter,
        decider: Decider,
        metrics: Metrics,
        usage: UsageMeter,
        trusted: TrustedProxies,
        denials: DenialLog,
    ) -> None:
        self.adapter = adapter
        self.facts = adapter.facts
        self.render = adapter.render
        self.decider = decider
        self.trusted = trusted
        self.observe = metrics.decision_observer(adapter.name)
        self.count = usage.record
        self.denials = denials

    def done(self, facts: Facts, decision: Decision, started: float) -> None:
        """Count a decision made (``started`` from ``time.perf_counter``)."""
        self.observe(decision, time.perf_counter() - started)
        self.count(decision, time.time())
        if decision.reason is not None:
            self.denials(facts, decision)

    async def answer(self, request: Inbound) -> Reply:
        """The whole path, waiting for the store when it must."""
        started = time.perf_counter()
        facts = self.facts(request, self.trusted)
        decision = await self.decider.decide(facts)
        self.done(facts, decision, started)
        return self.reply(decision)

    def reply(self, decision: Decision) -> Reply:
        """The adapter's reply, with ``X-RateLimit-*`` on an allow a rate limit applied to."""
        reply = self.render(decision)
        if decision.reason is None and decision.rate is not None:
            return Reply(reply.status, [*reply.headers, *rate_headers(decision)], reply.body)
        return reply


GATES = web.AppKey("gates", dict[str, Gate])


def aiohttp_handler(adapter: Adapter) -> Handler:
    """The adapter's endpoint as an aiohttp handler (its gate exists once the store is open)."""
    name = adapter.name

    async def handle(request: web.Request) -> web.Response:
        gate = request.app[GATES][name]
        inbound = Inbound(request.method, request.raw_path, request.host, request.headers,
                          request.remote)  # fmt: skip
        reply = await gate.answer(inbound)
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    return handle
