"""Shared limits as users run them: ``keystile serve --workers 2`` with and without
Redis under 1,000 concurrent auth requests for a 300/min key, the start-up log
and ``config check`` wording, and a Redis password that never shows."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.e2e.harness import KEYSTILE, Keystile

from .redis_server import closed_port, delete_prefix, redis_url, unique_prefix

REQUESTS = 1000
LIMIT = 300


async def burst(port: int, key: str, count: int = REQUESTS) -> Counter[str]:
    """``count`` auth requests at once, each on a fresh connection (any worker may
    take it); what came back: allow, rate_limited, or the status."""
    connector = aiohttp.TCPConnector(limit=count, force_close=True)
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"X-Original-URI": "/v1/x", "X-Api-Key": key}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> str:
            url = f"http://127.0.0.1:{port}/auth/nginx"
            async with session.get(url, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    return "allow"
                return response.headers.get("X-Keystile-Reason", str(response.status))

        return Counter(await asyncio.gather(*(one() for _ in range(count))))


def serve(tmp_path: Path, **env: str) -> Keystile:
    keystile = Keystile(tmp_path, {"KEYSTILE_DB": str(tmp_path / "k.db"), "KEYSTILE_WORKERS": "2",
                                   **env})  # fmt: skip
    return keystile


def limited_key(keystile: Keystile) -> str:
    made = keystile.cli("keys", "create", "--name", "hot", "--limit", f"per_minute={LIMIT}",
                        "--json")  # fmt: skip
    return str(orjson.loads(made.stdout)["key"])


@pytest.fixture
def prefix() -> Iterator[str]:
    url, chosen = redis_url(), unique_prefix()
    yield chosen
    asyncio.run(delete_prefix(url, chosen))


async def test_two_workers_sharing_redis_admit_exactly_the_limit(
    tmp_path: Path, prefix: str
) -> None:
    # exactness is the point here: a longer wait than the default 0.5 s, so that a CI
    # machine busier than ours (the burst itself saturates two cores) answers no 503
    keystile = serve(tmp_path, KEYSTILE_REDIS_URL=redis_url(), KEYSTILE_REDIS_PREFIX=prefix,
                     KEYSTILE_REDIS_TIMEOUT="2")  # fmt: skip
    key = limited_key(keystile)
    keystile.start()
    try:
        answers = await burst(keystile.port, key)
    finally:
        keystile.stop()
    assert answers == {"allow": LIMIT, "rate_limited": REQUESTS - LIMIT}, answers
    log = keystile.log()
    assert (
        "Rate limits, quotas and token budgets: shared by every worker and replica in Redis" in log
    ), log


async def test_two_workers_without_redis_overshoot_and_say_so(tmp_path: Path) -> None:
    """The figure the shared limits exist for: per-process counting lets each worker
    admit the whole limit (and the start-up log warns of it)."""
    keystile = serve(tmp_path)
    key = limited_key(keystile)
    keystile.start()
    try:
        answers = await burst(keystile.port, key)
    finally:
        keystile.stop()
    assert answers["allow"] > LIMIT and answers["allow"] <= 2 * LIMIT, answers
    assert (
        "per process (KEYSTILE_REDIS_URL not set): N workers or replicas admit up to N "
        "times each limit or budget (workers: 2, so up to 2x)" in keystile.log()
    )


async def test_redis_down_fails_closed_and_never_shows_its_password(tmp_path: Path) -> None:
    secret = "pw-serve-never-shown"
    url = f"redis://:{secret}@127.0.0.1:{closed_port()}/0"
    keystile = serve(tmp_path, KEYSTILE_REDIS_URL=url, KEYSTILE_WORKERS="1")
    key = limited_key(keystile)
    free = str(orjson.loads(keystile.cli("keys", "create", "--name", "f", "--json").stdout)["key"])
    keystile.start()
    try:
        limited, unlimited = await burst(keystile.port, key, 5), await burst(keystile.port, free, 5)
    finally:
        keystile.stop()
    assert limited == {"auth_unavailable": 5} and unlimited == {"allow": 5}
    log = keystile.log()
    assert "limits_unavailable" in log and secret not in log
    assert "redis://:***@127.0.0.1" in log


def test_config_check_says_where_limits_are_counted(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env.update(KEYSTILE_DB=str(tmp_path / "k.db"), KEYSTILE_WORKERS="3")

    def check(*args: str, **extra: str) -> str:
        done = subprocess.run([str(KEYSTILE), "config", "check", *args], env={**env, **extra},
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    alone = check()
    assert (
        "Rate limits, quotas and token budgets: per process (KEYSTILE_REDIS_URL not set): N "
        "workers or replicas admit up to N times each limit or budget (workers: 3, so up to 3x)."
    ) in alone
    secret = "pw-config-check"
    shared = check(KEYSTILE_REDIS_URL=f"redis://app:{secret}@cache:6379/1",
                   KEYSTILE_REDIS_UNAVAILABLE="local")  # fmt: skip
    assert secret not in shared and "redis://app:***@cache:6379/1" in shared
    assert "shared by every worker and replica" in shared and "N processes" in shared
    data = orjson.loads(check("--json", KEYSTILE_REDIS_URL=f"redis://:{secret}@cache"))
    assert data["limits"]["shared"] is True and secret not in str(data)
