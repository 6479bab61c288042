"""The request path with shared limits (Redis) over a real SQLite store: only
requests that nothing but a limit refuses are counted, quotas start from stored
usage, and a Redis that is gone fails closed (or, when asked, per process)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict

from keystile.core.decide import Decision, Facts, Rules
from keystile.core.keys import Hasher, KeyFormat
from keystile.core.routes import load_routes
from keystile.limits.shared_limits import SharedLimits, connect
from keystile.limits.tokens import TokenBudgets
from keystile.limits.usage import UsageMeter
from keystile.manage.service import KeyService
from keystile.observe.logs import DenialLog
from keystile.observe.metrics import Metrics
from keystile.serve.cache import CachedLookup
from keystile.serve.gate import Authorizer, Judge
from keystile.serve.lookup import KeyLookup
from keystile.serve.static_keys import StaticKeys
from keystile.store import Store

from .conftest import Clock
from .redis_server import closed_port, delete_prefix, redis_url, unique_prefix

ROUTES = [{"name": "chat", "path": "/v1/chat/*", "scopes": ["chat"]},
          {"name": "admin", "path": "/admin/*", "scopes": ["admin"]}]  # fmt: skip
NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC).timestamp()


@dataclass
class Process:
    """One process's request path: its authorizer over the shared store."""

    authorizer: Authorizer
    judge: Judge


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
async def paths(store: Store, clock: Clock) -> AsyncIterator[Maker]:
    """Makes request paths ("processes") whose limits live in Redis at ``url``."""
    prefix, made = unique_prefix(), []
    url = redis_url()
    table, errors = load_routes(ROUTES, {}, None)
    assert not errors

    async def make(redis: str | None = url, fallback: bool = False, budgets: bool = False,
                   ) -> Process:  # fmt: skip
        shared = None if redis is None else connect(redis, prefix, fallback=fallback)
        if shared is not None:
            made.append(shared)
        cache = CachedLookup(KeyLookup(store, Hasher(), KeyFormat(), StaticKeys()))
        await cache.start()
        ledger = TokenBudgets(store.tokens_since) if budgets else None
        rules = Rules(table, token_estimate=1 if budgets else 0)
        authorizer = Authorizer(rules, cache, clock=clock, shared=shared, budgets=ledger)
        if authorizer.shared_budgets is not None:
            await authorizer.shared_budgets.start()
        judge = Judge("test", authorizer, Metrics(), UsageMeter(), DenialLog())
        return Process(authorizer, judge)

    yield make
    for shared in made:
        await shared.close()
    await delete_prefix(url, prefix)


Maker = Callable[..., Awaitable[Process]]


def facts(key: str, target: str = "/v1/chat/x") -> Facts:
    headers = CIMultiDict([("Authorization", f"Bearer {key}")])
    return Facts("test", "POST", "api.local", target, headers, "192.0.2.1")


def code(answer: tuple[Decision, object]) -> str:
    reason = answer[0].reason
    return "allow" if reason is None else f"{reason.code}/{reason.detail}"


async def test_requests_refused_for_another_reason_are_never_counted(
    paths: Maker, store: Store, clock: Clock
) -> None:
    key = (await KeyService(store, Hasher(), clock=clock).create(
        "k", scopes=["chat"], limits={"per_minute": 2})).key  # fmt: skip
    one, two = await paths(), await paths()
    for _ in range(5):  # no admin scope: refused before the limits are asked
        assert code(await one.judge.judge(facts(key, "/admin/x"))) == (
            "insufficient_scope/missing_scope"
        )
    answers = [code(await p.judge.judge(facts(key))) for p in (one, two, one, two)]
    assert answers == ["allow", "allow", "rate_limited/rate_limit", "rate_limited/rate_limit"]
    limited = (await two.judge.judge(facts(key)))[0]
    assert limited.retry_after == 61 and limited.rate is not None and limited.rate.remaining == 0


async def test_quota_starts_from_stored_usage_in_every_process(
    paths: Maker, store: Store, clock: Clock
) -> None:
    issued = await KeyService(store, Hasher(), clock=clock).create(
        "q", scopes=["chat"], limits={"quota_day": 4})  # fmt: skip
    meter = UsageMeter()
    for _ in range(2):  # used before these processes started
        meter.record(Decision(None, issued.record), NOW - 60)
    await meter.flush(store)
    one, two = await paths(), await paths()
    answers = [code(await p.judge.judge(facts(issued.key))) for p in (one, two, one)]
    assert answers == ["allow", "allow", "quota_exceeded/quota"]
    clock.now += 12 * 3600  # the next UTC day
    assert code(await two.judge.judge(facts(issued.key))) == "allow"


async def test_the_admin_api_caller_check_shares_the_limits(
    paths: Maker, store: Store, clock: Clock
) -> None:
    issued = await KeyService(store, Hasher(), clock=clock).create(
        "a", scopes=["admin"], limits={"per_minute": 1})  # fmt: skip
    one, two = await paths(), await paths()
    headers = CIMultiDict([("Authorization", f"Bearer {issued.key}")])
    assert code(await one.authorizer.caller(headers, "192.0.2.1")) == "allow"
    assert code(await two.authorizer.caller(headers, "192.0.2.1")) == "rate_limited/rate_limit"


async def test_redis_gone_refuses_limited_keys_only(
    paths: Maker, store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    service = KeyService(store, Hasher(), clock=clock)
    limited = (await service.create("l", scopes=["chat"], limits={"per_minute": 5})).key
    free = (await service.create("f", scopes=["chat"])).key
    secret = "pw-never-logged"
    dead = await paths(f"redis://:{secret}@127.0.0.1:{closed_port()}/0")
    with caplog.at_level(logging.INFO):
        answer = await dead.judge.judge(facts(limited))
        assert code(answer) == "auth_unavailable/limits_unavailable"
        assert answer[0].reason is not None and answer[0].reason.outcome.value == 503
        assert code(await dead.judge.judge(facts(free))) == "allow"  # never asks Redis
        # refused before the limits: the usual answer, not a 503
        assert code(await dead.judge.judge(facts(limited, "/admin/x"))).startswith("insuff")
    assert "limits_unavailable" in caplog.text and secret not in caplog.text


async def test_local_fallback_counts_per_process_and_says_so(
    paths: Maker, store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    key = (await KeyService(store, Hasher(), clock=clock).create(
        "l", scopes=["chat"], limits={"per_minute": 2, "quota_day": 100})).key  # fmt: skip
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    one = await paths(dead, fallback=True)
    with caplog.at_level(logging.INFO):
        answers = [code(await one.judge.judge(facts(key))) for _ in range(3)]
    assert answers == ["allow", "allow", "rate_limited/rate_limit"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "per-process" in errors[0].getMessage()  # once, not per request


async def test_the_local_fallback_starts_from_what_redis_admitted(
    paths: Maker, store: Store, clock: Clock
) -> None:
    """While Redis answers, the process also counts locally: when it fails, the
    per-process limits already hold this process's share."""
    key = (await KeyService(store, Hasher(), clock=clock).create(
        "l", scopes=["chat"], limits={"per_minute": 3})).key  # fmt: skip
    one = await paths(fallback=True)
    assert [code(await one.judge.judge(facts(key))) for _ in range(2)] == ["allow"] * 2
    shared = one.authorizer.shared
    assert isinstance(shared, SharedLimits)
    await shared.client.connection_pool.disconnect()
    one.authorizer.shared = connect(f"redis://127.0.0.1:{closed_port()}/0", "x:", fallback=True)
    try:
        answers = [code(await one.judge.judge(facts(key))) for _ in range(2)]
    finally:
        await one.authorizer.shared.close()
    assert answers == ["allow", "rate_limited/rate_limit"]


@pytest.mark.parametrize("limit", ["quota_day=1", "per_hour=1"])
async def test_one_order_of_refusals_with_and_without_redis(
    paths: Maker, service: KeyService, limit: str
) -> None:
    """A key over a quota (or a rate limit) and a token budget at once is refused for
    the same reason whether limits are counted in Redis or in the process: the
    core's order (quotas, then budgets, then rate limits) on both paths."""
    name, value = limit.split("=")
    answers = {}
    for where in ("redis", "process"):
        made = await service.create(f"both-{where}", scopes=["chat"],
                                    limits={name: int(value), "tokens_per_day": 1})  # fmt: skip
        process = await paths(redis=redis_url() if where == "redis" else None, budgets=True)
        first = await process.judge.judge(facts(made.key))
        assert code(first) == "allow"
        answers[where] = code(await process.judge.judge(facts(made.key)))
    assert answers["redis"] == answers["process"], answers
    expected = "quota_exceeded/quota" if name == "quota_day" else "/tokens_per_day"
    assert answers["process"].endswith(expected), answers
