"""Token budgets in a real Redis, shared by several "replicas" (each its own
connection, ledger and process-local secret until they share Redis's): a
reservation made on one is reported once on any, concurrency never overshoots,
unreported reservations are released by any replica's sweep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from keystile.core import reasons
from keystile.core.model import KeyRecord, TeamPolicy
from keystile.limits.shared_budgets import SharedBudgets
from keystile.limits.shared_limits import connect
from keystile.limits.tokens import TokenBudgets
from keystile.limits.usage import UsageMeter

from .redis_server import delete_prefix, redis_url, unique_prefix

NOW = 1_796_000_010.0


def record(key_id: str, limits: dict[str, int], team: TeamPolicy | None = None) -> KeyRecord:
    return KeyRecord(key_id, "h", "sha256", "ks_x", key_id, 0.0, 0.0, limits=limits, team=team)


async def stored_900(kind: str, owner_id: str, since: float) -> int:
    return 900


class Replica:
    def __init__(self, budgets: SharedBudgets, meter: UsageMeter) -> None:
        self.budgets, self.meter = budgets, meter


@pytest.fixture
async def replicas() -> AsyncIterator[list[Replica]]:
    url, prefix = redis_url(), unique_prefix()
    made = []
    for _ in range(3):
        meter = UsageMeter()
        local = TokenBudgets(stored_900, timeout=30, sink=meter.add_tokens)
        shared = SharedBudgets(connect(url, prefix), local)
        await shared.start()
        made.append(Replica(shared, meter))
    yield made
    for replica in made:
        await replica.budgets.shared.close()
    await delete_prefix(url, prefix)


async def test_reserved_on_one_reported_once_on_another(replicas: list[Replica]) -> None:
    a, b, c = replicas
    key = record("key_a1", {"tokens_per_minute": 1000})
    token, spent = await a.budgets.reserve(key, "chat", 400, NOW)
    assert token is not None and spent.tokens == ()
    assert await b.budgets.report(token, 700, NOW + 1)  # another replica's reservation
    assert not await c.budgets.report(token, 700, NOW + 2)  # once, wherever it arrives
    assert b.meter.tokens == {("key_a1", int(NOW // 3600 * 3600), "chat"): 700}
    # 700 used of 1000: an estimate of 400 no longer fits, 300 does
    token2, spent2 = await c.budgets.reserve(key, "chat", 400, NOW + 3)
    assert token2 is None and spent2.tokens[0][:2] == (reasons.TOKENS_PER_MINUTE, 300)
    assert (await a.budgets.reserve(key, "chat", 300, NOW + 3))[0] is not None


async def test_concurrent_reservations_never_overshoot(replicas: list[Replica]) -> None:
    key = record("key_c1", {"tokens_per_minute": 1000})

    async def one(index: int) -> bool:
        replica = replicas[index % 3]
        token, _ = await replica.budgets.reserve(key, "", 100, NOW)
        return token is not None

    admitted = sum(await asyncio.gather(*(one(i) for i in range(90))))
    assert admitted == 10  # 10 x 100 = the budget, whatever the interleaving


async def test_day_windows_start_from_stored_tokens_and_teams_bind(
    replicas: list[Replica],
) -> None:
    a, b, _ = replicas
    team = TeamPolicy("team_t", {"tokens_per_day": 1000})
    one, two = record("key_1", {}, team), record("key_2", {}, team)
    for replica, key in ((a, one), (b, two)):
        await replica.budgets.local.load(key, NOW)  # 900 stored for the team today
    assert (await a.budgets.reserve(one, "", 100, NOW))[0] is not None  # 900 + 100 fits
    token, spent = await b.budgets.reserve(two, "", 1, NOW)  # the team's day is spent
    assert token is None and spent.tokens[0][0] is reasons.TOKENS_PER_DAY


async def test_any_sweep_releases_unreported_reservations(replicas: list[Replica]) -> None:
    a, _, c = replicas
    key = record("key_r1", {"tokens_per_minute": 100})
    assert (await a.budgets.reserve(key, "", 100, NOW))[0] is not None
    assert (await a.budgets.reserve(key, "", 1, NOW))[0] is None  # held
    assert await c.budgets.prune(NOW + 10) == 0
    assert await c.budgets.prune(NOW + 31) == 1  # past the 30 s timeout: given back
    assert (await a.budgets.reserve(key, "", 100, NOW + 32))[0] is not None


async def test_forged_reports_cost_no_redis_call(replicas: list[Replica]) -> None:
    a, _, _ = replicas
    key = record("key_f1", {"tokens_per_minute": 100})
    token, _ = await a.budgets.reserve(key, "", 10, NOW)
    assert token is not None
    key_id, expires, nonce, _ = token.split(".")
    before = a.budgets.local.ignored
    for fake in (f"{key_id}.{expires}.{nonce}.{'B' * 22}", "x", token + "x"):
        assert not await a.budgets.report(fake, 5, NOW)
    assert a.budgets.local.ignored == before + 3
