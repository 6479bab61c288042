"""Token budgets: reservations, reports, release, windows; and the path through the
gate and the core over a real store (tokens survive a restart through usage)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict

from keystile.core import reasons
from keystile.core.decide import Facts, Rules
from keystile.core.keys import Hasher, KeyFormat
from keystile.core.model import KeyRecord, TeamPolicy
from keystile.core.routes import load_routes
from keystile.limits.tokens import TokenBudgets, window
from keystile.limits.usage import UsageMeter
from keystile.manage.service import KeyService
from keystile.serve.cache import CachedLookup
from keystile.serve.gate import Authorizer
from keystile.serve.lookup import KeyLookup
from keystile.serve.static_keys import StaticKeys
from keystile.store import Store
from tests.backends import BOTH

from .conftest import Clock

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL
NOW = datetime(2026, 11, 23, 12, 30, 10, tzinfo=UTC).timestamp()


def record(key_id: str, limits: dict[str, int], team: TeamPolicy | None = None) -> KeyRecord:
    return KeyRecord(key_id, "h", "sha256", "ks_x", key_id, 0.0, 0.0, limits=limits, team=team)


async def nothing_stored(kind: str, owner_id: str, since: float) -> int:
    return 0


def left(budgets: TokenBudgets, key: KeyRecord, now: float = NOW) -> list[tuple[str, int, int]]:
    return [(reason.detail, tokens, retry) for reason, tokens, retry in budgets.state(key, now)]


async def test_a_reservation_holds_its_estimate_until_the_report_replaces_it() -> None:
    budgets = TokenBudgets(nothing_stored)
    key = record("key_a1", {"tokens_per_minute": 1000})
    token = budgets.reserve(key, "chat", 300, NOW)
    assert left(budgets, key) == [("tokens_per_minute", 700, 50)]  # reset at the minute's end
    assert await budgets.report(token, 120, NOW + 1)
    assert left(budgets, key) == [("tokens_per_minute", 880, 50)]
    assert not await budgets.report(token, 120, NOW + 2)  # once: a replay is ignored
    assert left(budgets, key) == [("tokens_per_minute", 880, 50)]


async def test_forged_malformed_and_expired_reports_are_ignored() -> None:
    budgets = TokenBudgets(nothing_stored, timeout=60)
    key = record("key_a1", {"tokens_per_day": 1000})
    budgets.used[("key:key_a1", "tokens_per_day", window("tokens_per_day", NOW)[0])] = 0
    token = budgets.reserve(key, "chat", 10, NOW)
    key_id, expires, nonce, mac = token.split(".")
    forged = [
        f"{key_id}.{expires}.{nonce}.{'A' * 22}",  # wrong MAC
        f"key_other.{expires}.{nonce}.{mac}",  # another key's name on it
        f"{key_id}.{int(expires) + 999}.{nonce}.{mac}",  # a later expiry
        "", "garbage", "x" * 500, token + ".", token.replace(".", "_"),
    ]  # fmt: skip
    for fake in forged:
        assert not await budgets.report(fake, 5, NOW)
    assert not await budgets.report(token, -1, NOW)  # a negative count
    assert not await budgets.report(token, 10**12, NOW)  # beyond any real request
    assert not await budgets.report(token, 5, NOW + 61)  # expired
    assert budgets.ignored == len(forged) + 3
    other = TokenBudgets(nothing_stored, secret=b"another server's secret")
    assert not await other.report(token, 5, NOW)  # another server's reservation


async def test_an_unreported_reservation_is_released_after_the_timeout() -> None:
    budgets = TokenBudgets(nothing_stored, timeout=30)
    key = record("key_a1", {"tokens_per_minute": 100})
    budgets.reserve(key, "chat", 60, NOW)
    assert left(budgets, key)[0][1] == 40
    assert budgets.prune(NOW + 10) == 0
    assert budgets.prune(NOW + 31) == 1
    assert left(budgets, key, NOW + 31)[0][1] == 100  # given back (a new minute, too)


async def test_team_budgets_bind_every_key_of_the_team() -> None:
    team = TeamPolicy("team_t", {"tokens_per_day": 500})
    budgets = TokenBudgets(nothing_stored)
    one, two = record("key_1", {}, team), record("key_2", {"tokens_per_day": 10_000}, team)
    await budgets.load(one, NOW)
    await budgets.load(two, NOW)
    assert await budgets.report(budgets.reserve(one, "", 0, NOW), 450, NOW)
    assert [name for name, _, _ in left(budgets, two)] == ["tokens_per_day", "tokens_per_day"]
    assert min(tokens for _, tokens, _ in left(budgets, two)) == 50  # the team's binds


async def test_day_and_month_windows_start_from_stored_tokens_and_fail_closed_unread() -> None:
    async def stored(kind: str, owner_id: str, since: float) -> int:
        return 900

    budgets = TokenBudgets(stored)
    key = record("key_a1", {"tokens_per_day": 1000, "tokens_per_month": 5000})
    assert not budgets.loaded(key, NOW)
    assert [tokens for _, tokens, _ in left(budgets, key)] == [0, 0]  # unread: spent
    await budgets.load(key, NOW)
    assert budgets.loaded(key, NOW)
    day_end = datetime(2026, 11, 24, tzinfo=UTC).timestamp()
    assert left(budgets, key)[0] == ("tokens_per_day", 100, int(day_end - NOW))


# -- through the gate and the core, on a real store ---------------------------------

ROUTES = [{"name": "chat", "path": "/v1/chat/*", "token_estimate": 100},
          {"name": "cheap", "path": "/v1/cheap"}]  # fmt: skip


async def test_a_spent_budget_is_a_429_naming_it_and_usage_survives_a_restart(
    store: Store, clock: Clock
) -> None:
    clock.now = NOW
    service = KeyService(store, Hasher(), clock=clock)
    made = await service.create("llm", limits={"tokens_per_day": 1000})
    table, errors = load_routes(ROUTES, {}, None)
    assert not errors

    async def gate() -> tuple[Authorizer, TokenBudgets, UsageMeter]:
        lookup = KeyLookup(store, Hasher(), KeyFormat(), StaticKeys(None, ()))
        cache = CachedLookup(lookup)
        await cache.start()
        meter = UsageMeter()
        budgets = TokenBudgets(store.tokens_since, sink=meter.add_tokens)
        return Authorizer(Rules(table, token_estimate=5), cache, clock=clock,
                          budgets=budgets), budgets, meter  # fmt: skip

    def ask(target: str) -> Facts:
        headers = CIMultiDict([("Authorization", f"Bearer {made.key}")])
        return Facts("test", "POST", "api.local", target, headers, "192.0.2.1")

    authorizer, budgets, meter = await gate()
    first, _ = await authorizer.authorize(ask("/v1/chat/completions"))
    assert first.allowed and first.reservation is not None
    assert await budgets.report(first.reservation, 850, clock.now)
    second, _ = await authorizer.authorize(ask("/v1/chat/completions"))  # 150 left >= 100
    assert second.allowed and second.reservation is not None
    refused, _ = await authorizer.authorize(ask("/v1/chat/completions"))  # 50 left < 100
    assert refused.reason is reasons.TOKENS_PER_DAY
    assert refused.retry_after == int(datetime(2026, 11, 24, tzinfo=UTC).timestamp() - NOW)
    cheap, _ = await authorizer.authorize(ask("/v1/cheap"))  # the default estimate fits
    assert cheap.allowed
    await meter.flush(store)
    # a restart: the day's window starts from the stored tokens (850), not from zero
    authorizer, budgets, _ = await gate()
    again, _ = await authorizer.authorize(ask("/v1/chat/completions"))
    assert again.allowed  # 150 left: only reported tokens were stored, not reservations
    assert await store.tokens_since("key", made.record.id, NOW - 3600) == 850
    rows = await store.token_usage([made.record.id])
    assert rows == [(made.record.id, int(NOW // 3600 * 3600), "chat", 850)]


@pytest.mark.parametrize("estimate", [0, 1])
async def test_a_budget_of_zero_left_refuses_whatever_the_estimate(
    store: Store, clock: Clock, estimate: int
) -> None:
    budgets = TokenBudgets(store.tokens_since)
    key = record("key_a1", {"tokens_per_minute": 10})
    assert await budgets.report(budgets.reserve(key, "", estimate, NOW), 10, NOW)
    table, _ = load_routes([{"name": "r", "path": "/x"}], {}, None)
    rules = Rules(table, token_estimate=estimate)
    from keystile.core.decide import Limits

    decision = rules.limit(key, None, Limits(tokens=budgets.state(key, NOW)))
    assert decision.reason is reasons.TOKENS_PER_MINUTE
