"""Shared rate limits and quotas against a real Redis: the same answers as the
per-process limiter, exact under concurrency from several clients, TTLs, and
what happens when Redis is gone."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from keystile.core.errors import LimitsUnavailable
from keystile.core.model import KeyRecord, TeamPolicy
from keystile.core.urls import redact
from keystile.limits.policy import SlidingWindowLimiter
from keystile.limits.quotas import period
from keystile.limits.shared_limits import SharedLimits, connect

from .redis_server import closed_port, delete_prefix, redis_url, unique_prefix

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC).timestamp()
NOTHING_STORED: dict[tuple[str, str, float], int] = {}


def record(key_id: str, limits: dict[str, int], team: TeamPolicy | None = None) -> KeyRecord:
    return KeyRecord(key_id, "h", "sha256", "ks_x", key_id, 0.0, 0.0, limits=limits, team=team)


@pytest.fixture
async def url() -> str:
    return redis_url()


@pytest.fixture
async def limits_factory(url: str) -> AsyncIterator[Callable[..., SharedLimits]]:
    """Makes shared limits on the test Redis under one prefix (cleaned up after)."""
    prefix = unique_prefix()
    made: list[SharedLimits] = []

    def make(**kwargs: Any) -> SharedLimits:
        made.append(connect(url, prefix, **kwargs))
        return made[-1]

    yield make
    for each in made:
        await each.close()
    await delete_prefix(url, prefix)


@pytest.fixture
def shared(limits_factory: Callable[..., SharedLimits]) -> SharedLimits:
    return limits_factory()


async def allowed(shared: SharedLimits, key: KeyRecord, now: float,
                  stored: dict[tuple[str, str, float], int] = NOTHING_STORED) -> bool:  # fmt: skip
    limits = await shared.take(key, now, stored)
    return limits.quota_retry is None and limits.rate_retry is None


async def test_admits_exactly_the_limit_then_429_with_retry_after(shared: SharedLimits) -> None:
    key = record("k1", {"per_minute": 3})
    answers = [await shared.take(key, NOW + i * 0.1, NOTHING_STORED) for i in range(4)]
    assert [a.rate_retry is None for a in answers] == [True, True, True, False]
    assert [a.rate.remaining for a in answers[:3] if a.rate] == [2, 1, 0]
    assert answers[0].rate is not None and answers[0].rate.limit == 3
    assert answers[0].rate.reset == 60
    assert answers[3].rate_retry == 61  # the first slot leaves the window one period and a slot on


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_same_answers_as_the_per_process_limiter(shared: SharedLimits, seed: int) -> None:
    """A random schedule (bursts, pauses, a team) asked of both: every answer equal."""
    team = TeamPolicy("t1", {"per_minute": 7})
    keys = [record("a", {"per_second": 2, "per_minute": 5}, team), record("b", {}, team),
            record("c", {"per_hour": 9, "per_minute": 4})]  # fmt: skip
    local = SlidingWindowLimiter()
    chance = random.Random(seed)
    now, seen = NOW, set()
    for _ in range(300):
        now += chance.choice([0.0, 0.01, 0.2, 0.7, 3.0, 11.0, 40.0])
        key = chance.choice(keys)
        check = local.check(key, now)
        theirs = await shared.take(key, now, NOTHING_STORED)
        assert (theirs.rate_retry, theirs.rate) == (check.retry_after, check.rate), now - NOW
        seen.add(check.allowed)
        if check.allowed:
            local.take(check)
    assert seen == {True, False}  # both answers were compared


async def test_over_any_span_of_one_period_at_most_the_limit(shared: SharedLimits) -> None:
    key = record("k", {"per_minute": 10})
    admitted = []
    for step in range(2400):  # 0.05 s apart: two minutes of a client that never stops
        at = NOW + step * 0.05
        if await allowed(shared, key, at):
            admitted.append(at)
    assert len(admitted) == 20  # 10 at once, 10 more when the first slot leaves (61 s)
    for i, at in enumerate(admitted):
        assert sum(1 for other in admitted[i:] if other < at + 60) <= 10


async def test_a_team_limit_is_shared_by_its_keys(shared: SharedLimits) -> None:
    team = TeamPolicy("ml", {"per_minute": 4})
    a, b = record("a", {}, team), record("b", {"per_minute": 100}, team)
    answers = [await allowed(shared, key, NOW) for key in (a, b, a, b, a, b)]
    assert answers == [True, True, True, True, False, False]


async def test_a_refused_request_is_counted_nowhere(shared: SharedLimits) -> None:
    """The key's own limit is spent: the team's budget is untouched."""
    team = TeamPolicy("ml", {"per_minute": 3})
    tight, other = record("tight", {"per_minute": 1}, team), record("other", {}, team)
    assert [await allowed(shared, tight, NOW) for _ in range(5)] == [True] + [False] * 4
    assert [await allowed(shared, other, NOW) for _ in range(3)] == [True, True, False]


async def test_quota_starts_from_stored_usage_and_resets_with_the_period(
    shared: SharedLimits,
) -> None:
    key = record("q", {"quota_day": 5})
    start, end = period("quota_day", NOW)
    stored = {("key:q", "quota_day", start): 3}  # used before this process started
    assert [await allowed(shared, key, NOW, stored) for _ in range(3)] == [True, True, False]
    spent = await shared.take(key, NOW, {("key:q", "quota_day", start): 0})  # Redis holds it now
    assert spent.quota_retry == end - NOW == 11 * 3600 + 30 * 60
    tomorrow = NOW + 86400  # a new counter, from tomorrow's stored usage (none)
    assert [await allowed(shared, key, tomorrow) for _ in range(6)] == [True] * 5 + [False]


async def test_team_quota_per_calendar_month(shared: SharedLimits) -> None:
    team = TeamPolicy("t", {"quota_month": 2})
    a, b = record("a", {}, team), record("b", {}, team)
    assert [await allowed(shared, k, NOW) for k in (a, b, a)] == [True, True, False]
    december = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC).timestamp()
    assert await allowed(shared, b, december)


async def test_every_key_written_expires(shared: SharedLimits, url: str) -> None:
    from redis.asyncio import Redis

    key = record("ttl", {"per_second": 5, "per_day": 50, "quota_month": 9})
    assert await allowed(shared, key, NOW)
    client = Redis.from_url(url)
    try:
        names = [name async for name in client.scan_iter(match=f"{shared.prefix}*")]
        ttls = {name.decode(): await client.pttl(name) for name in names}
    finally:
        await client.aclose()
    assert len(ttls) == 3 and all(ttl > 0 for ttl in ttls.values()), ttls
    day = next(ttl for name, ttl in ttls.items() if name.endswith(":86400"))
    assert 86400_000 < day <= 86400_000 * 62 / 60  # the window and a slot


async def test_concurrent_clients_admit_exactly_the_limit(
    limits_factory: Callable[..., SharedLimits],
) -> None:
    """Three clients (own connection pools, as three processes) race 900 requests
    for a 300/min key: check-and-count is one step, so exactly 300 pass."""
    clients = [limits_factory(timeout=10.0) for _ in range(3)]
    key = record("hot", {"per_minute": 300, "quota_day": 100_000})
    answers = await asyncio.gather(*(allowed(clients[i % 3], key, NOW + i * 0.001)
                                     for i in range(900)))  # fmt: skip
    assert sum(answers) == 300


async def test_a_script_redis_forgot_is_loaded_again(shared: SharedLimits) -> None:
    """A restarted (or flushed) Redis answers NOSCRIPT: the script is loaded once more."""
    key = record("k", {"per_minute": 2})
    assert await allowed(shared, key, NOW)
    await shared.client.script_flush()  # Redis knows no script, as after a restart
    assert [await allowed(shared, key, NOW) for _ in range(2)] == [True, False]


async def test_unreachable_redis_raises_promptly(url: str) -> None:
    dead = connect(f"redis://127.0.0.1:{closed_port()}/0", unique_prefix())
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(LimitsUnavailable):
            await dead.take(record("k", {"per_minute": 1}), NOW, NOTHING_STORED)
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        await dead.close()


async def test_a_password_never_reaches_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-redis-pw"
    dead_url = f"redis://:{secret}@127.0.0.1:{closed_port()}/0"
    dead = connect(dead_url, unique_prefix(), fallback=True)
    try:
        with caplog.at_level(logging.INFO), pytest.raises(LimitsUnavailable) as caught:
            await dead.take(record("k", {"per_minute": 1}), NOW, NOTHING_STORED)
    finally:
        await dead.close()
    assert secret not in str(caught.value) and secret not in caplog.text
    assert "per-process" in caplog.text  # loudly, as an error
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert secret not in redact(dead_url) and ":***@127.0.0.1" in redact(dead_url)
    assert redact(f"unix:///run/redis.sock?password={secret}&db=1").count(secret) == 0
