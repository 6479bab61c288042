"""Rate limits and quotas shared by every worker and replica, in Redis.

Per-process counting lets N processes admit up to N times a limit. Here one Lua
script per decision (:data:`SCRIPT`) looks at every bucket of a key and its
team and, only if all of them fit, counts the request in all of them: check
and count are one atomic step inside Redis, so no two processes can both take
the last unit of a limit (a read-then-write from Python could).

The buckets mean what the per-process ones mean (:mod:`keystile.policy`,
:mod:`keystile.quotas`): a rate limit is a sliding window of 61 slots of
``period / 60`` (a Redis hash of slot -> count; over any span of one period a
limit of N admits at most N), a quota is a counter per UTC day or calendar
month. A quota counter that does not exist yet starts from the usage the
caller read from the store (quotas survive restarts of keystile and of Redis).
Every key has a TTL, so idle keys and past periods leave Redis by themselves.

The caller's clock is passed in (``now``): the slot and period arithmetic is the
same Python code as the per-process limiter's, and tests can move time. Clocks of
replicas should agree (NTP): a clock d seconds ahead frees slots d seconds early.
One Redis instance (or a primary), not Redis Cluster: a key's and its team's
buckets are touched by one script, and Cluster refuses keys in different slots.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keystile.core.decide import Limits
from keystile.core.errors import LimitsUnavailable
from keystile.core.flights import within
from keystile.core.model import KeyRecord, RateInfo
from keystile.core.urls import password_of, redact
from keystile.limits.policy import SLOTS, buckets
from keystile.limits.quotas import QUOTAS, period

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from keystile.config import Settings

# seconds a request waits for Redis (redis.timeout). Not the store lookup's 0.25 s: every
# limited request waits for Redis, and under a burst that saturates the CPU the wait also
# holds the event loop's backlog (1,000 requests at once on 2 busy cores, 2 workers: 446
# of them passed 0.25 s, none passed 0.5 s)
LIMITS_TIMEOUT = 0.5
MAX_CONNECTIONS = 64  # per process; more requests wait for one (within LIMITS_TIMEOUT)
QUOTA_TTL_MARGIN = 3600  # seconds a quota counter outlives its period (clock skew)
OUTAGE_LOG_EVERY = 60.0  # seconds between two error lines while Redis stays unavailable
log = logging.getLogger("keystile.limits")

# KEYS: the rate buckets (ARGV[1] of them), then the quota counters.
# ARGV after the count: slot, limit, ttl in ms per rate bucket; limit, stored usage,
# ttl in ms per quota counter; last, 1 to only look (count nothing) or 0. Returns
# {allowed, spent quota (1-based, 0: none), spent rate bucket (0: none), its oldest
# counted slot, tightest bucket, its remaining}.
SCRIPT = """
local nrate = tonumber(ARGV[1])
local arg = 2
local rate_spent, oldest_spent, tight, tight_left = 0, 0, 0, 0
for i = 1, nrate do
  local slot, limit = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1])
  arg = arg + 3
  local flat = redis.call('HGETALL', KEYS[i])
  local total, oldest, stale = 0, nil, {}
  for j = 1, #flat, 2 do
    local s = tonumber(flat[j])
    if s < slot - 60 then
      stale[#stale + 1] = flat[j]
    else
      total = total + tonumber(flat[j + 1])
      if oldest == nil or s < oldest then oldest = s end
    end
  end
  if #stale > 0 then redis.call('HDEL', KEYS[i], unpack(stale)) end
  if total + 1 > limit then
    if rate_spent == 0 then rate_spent, oldest_spent = i, oldest or (slot - 60) end
  elseif tight == 0 or limit - total - 1 < tight_left then
    tight, tight_left = i, limit - total - 1
  end
end
local quota_spent = 0
for q = nrate + 1, #KEYS do
  local limit, stored, ttl = tonumber(ARGV[arg]), ARGV[arg + 1], ARGV[arg + 2]
  arg = arg + 3
  local used = redis.call('GET', KEYS[q])
  if not used then
    redis.call('SET', KEYS[q], stored, 'PX', ttl)
    used = stored
  end
  if quota_spent == 0 and tonumber(used) + 1 > limit then quota_spent = q - nrate end
end
if quota_spent > 0 or rate_spent > 0 then
  return {0, quota_spent, rate_spent, oldest_spent, tight, tight_left}
end
if ARGV[#ARGV] == '1' then return {1, 0, 0, 0, tight, tight_left} end
arg = 2
for i = 1, nrate do
  redis.call('HINCRBY', KEYS[i], ARGV[arg], 1)
  redis.call('PEXPIRE', KEYS[i], ARGV[arg + 2])
  arg = arg + 3
end
for q = nrate + 1, #KEYS do redis.call('INCR', KEYS[q]) end
return {1, 0, 0, 0, tight, tight_left}
"""


@dataclass(frozen=True, slots=True)
class _Plan:
    """A record's buckets, built once per record: what the script is asked."""

    rates: tuple[tuple[str, int, int], ...]  # (redis key, period, limit)
    quotas: tuple[tuple[str, str, int], ...]  # (owner, quota name, limit)


class SharedLimits:
    """Check-and-count of a limited key's rate limits and quotas, one script call each."""

    def __init__(self, client: Redis, prefix: str = "keystile:", timeout: float = LIMITS_TIMEOUT,
                 secret: str | None = None, fallback: bool = False) -> None:  # fmt: skip
        self.client = client
        self.secret = secret  # the URL's password: scrubbed from every error message
        # redis.unavailable = local: the caller counts in its own process while Redis fails
        self.fallback = fallback
        self.failures = 0  # requests since Redis became unavailable (0: it answers)
        self._logged = -OUTAGE_LOG_EVERY  # monotonic time of the last outage line
        self._told = False  # an outage line was logged since Redis last answered
        self.prefix = prefix
        self.timeout = timeout
        # redis-py is imported only once Redis is configured (here), never per request
        from redis.exceptions import NoScriptError, RedisError

        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._unknown_script = NoScriptError
        self.scripts: dict[str, str] = {}  # SHA-1 (as Redis names a script) -> its text
        self.sha = self.script(SCRIPT)
        self._queue: list[tuple[str, list[str], list[Any], Any]] = []  # calls of this loop turn
        self._sending: set[Any] = set()  # pipelines in flight (tasks kept referenced)
        self._plans: dict[int, tuple[KeyRecord, _Plan]] = {}  # id(record): as the limiter's

    def _plan(self, record: KeyRecord) -> _Plan:
        memo = self._plans.get(id(record))
        if memo is not None and memo[0] is record:
            return memo[1]
        if len(self._plans) > 100_000:
            self._plans.clear()
        rates = tuple((f"{self.prefix}rate:{bucket}", per, limit)
                      for bucket, per, limit in buckets(record))  # fmt: skip
        owners = [(f"key:{record.id}", record.limits)]
        if record.team is not None:
            owners.append((f"team:{record.team.id}", record.team.limits))
        quotas = tuple((owner, name, int(limits[name]))
                       for owner, limits in owners
                       for name in QUOTAS if name in limits)  # fmt: skip
        plan = self._plans[id(record)] = (record, _Plan(rates, quotas))
        return plan[1]

    async def take(self, record: KeyRecord, now: float,
                   stored: Mapping[tuple[str, str, float], int], *,
                   look: bool = False) -> Limits:  # fmt: skip
        """The key's limits at ``now``, the request counted in all of them if all fit
        (``look``: counted in none, only looked at).

        ``stored``: usage per (owner, quota, period start) as :class:`~keystile.quotas.Quotas`
        read it, where a quota counter Redis does not hold yet starts. Raises
        :class:`LimitsUnavailable` when Redis fails or takes longer than the timeout."""

        plan = self._plan(record)
        if not plan.rates and not plan.quotas:  # token budgets only: counted elsewhere
            return Limits()
        keys: list[str] = []
        args: list[Any] = [len(plan.rates)]
        for name, per, limit in plan.rates:
            keys.append(name)
            # the slot as the per-process limiter computes it; TTL: the window and a slot
            args += [int(now // (per / SLOTS)), limit, math.ceil(per * 1000 * 62 / SLOTS)]
        ends = []
        for owner, name, limit in plan.quotas:
            start, end = period(name, now)
            ends.append(end)
            keys.append(f"{self.prefix}quota:{owner}:{name}:{int(start)}")
            ttl = math.ceil((end - now + QUOTA_TTL_MARGIN) * 1000)
            args += [limit, stored.get((owner, name, start), 0), ttl]
        args.append(1 if look else 0)
        reply = await self.run(self.sha, keys, args)
        _, quota_spent, rate_spent, oldest, tight, left = (int(value) for value in reply)
        quota_retry = None
        if quota_spent:
            quota_retry = max(1, math.ceil(ends[quota_spent - 1] - now))
        if rate_spent:
            _, per, limit = plan.rates[rate_spent - 1]
            frees_at = (oldest + SLOTS + 1) * (per / SLOTS)
            retry = max(1, math.ceil(frees_at - now))
            return Limits(quota_retry, retry, RateInfo(limit, 0, retry))
        rate = None
        if tight:
            _, per, limit = plan.rates[tight - 1]
            rate = RateInfo(limit, left, per)  # reset: all counted now has left (one period)
        return Limits(quota_retry, None, rate)

    async def run(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        """:meth:`call`, its failures as :class:`LimitsUnavailable` (logged as such),
        and a line when Redis answers again after an outage."""
        try:
            reply = await self.call(sha, keys, args)
        except TimeoutError:
            raise self._failed(f"Redis did not answer within {self.timeout} s") from None
        except self._errors as exc:
            raise self._failed(self._why(exc)) from None
        if self.failures:
            if self._told:
                log.warning("Redis answers again (%d requests failed): rate limits and quotas "
                            "are shared again", self.failures)  # fmt: skip
            self.failures, self._told = 0, False
        return reply

    async def ping(self) -> None:
        """Return once Redis answers a PING within the timeout; else raise
        :class:`LimitsUnavailable` (for readiness: not counted or logged as a failed
        request). The deadline needs no task and never waits for a silent Redis."""

        async def pong() -> None:
            await self.client.ping()

        try:
            await within(pong(), self.timeout)
        except TimeoutError:
            raise LimitsUnavailable(f"Redis did not answer within {self.timeout} s") from None
        except self._errors as exc:
            raise LimitsUnavailable(self._why(exc)) from None

    def _why(self, exc: BaseException) -> str:
        """What failed, the URL's password scrubbed from it."""
        message = str(exc) if not self.secret else str(exc).replace(self.secret, "***")
        return f"Redis failed: {type(exc).__name__}: {message}"

    def script(self, text: str) -> str:
        """Register a script; its SHA, for :meth:`call`."""
        sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        self.scripts[sha] = text
        return sha

    async def call(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        """The script's reply for one decision, within the timeout. Calls made in one
        turn of the event loop go to Redis together, as one pipeline (each script
        still runs atomically on its own): a burst costs one round trip and one
        write per turn, not one per request."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((sha, keys, args, future))
        if len(self._queue) == 1:
            loop.call_soon(self._send)
        timer = loop.call_later(self.timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _send(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.ensure_future(self._run(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _run(self, batch: list[tuple[str, list[str], list[Any], Any]]) -> None:
        """One pipeline of EVALSHA calls; the script loaded (and those calls sent
        again) when Redis does not know it yet (a new or restarted Redis)."""
        try:
            replies = await self._pipeline(batch)
            if any(isinstance(reply, self._unknown_script) for reply in replies):
                for text in {self.scripts[sha] for sha, _, _, _ in batch}:
                    await self.client.script_load(text)
                replies = await self._pipeline(batch)
        except Exception as exc:  # the connection or Redis failed: every call of the batch
            replies = [exc] * len(batch)
        for (_, _, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # timed out meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, batch: list[tuple[str, list[str], list[Any], Any]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for sha, keys, args, _ in batch:
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    def _failed(self, why: str) -> LimitsUnavailable:
        """The error to raise; logged as an error at most once a minute (a flapping
        Redis does not flood the log), and the recovery after such a line."""
        self.failures += 1
        now = time.monotonic()
        if now - self._logged >= OUTAGE_LOG_EVERY:
            self._logged, self._told = now, True
            if self.fallback:
                log.error("%s: rate limits and quotas fall back to per-process counting "
                          "(redis.unavailable = local): every worker and replica now admits "
                          "up to each full limit on its own (%d requests so far)",
                          why, self.failures)  # fmt: skip
            else:
                log.error("%s: keys with rate limits or quotas are refused (503 "
                          "limits_unavailable) until Redis answers (%d requests so far)",
                          why, self.failures)  # fmt: skip
        return LimitsUnavailable(why)

    async def close(self) -> None:
        await self.client.aclose()


def _expire(future: Any) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def connect(url: str, prefix: str, fallback: bool = False,
            timeout: float = LIMITS_TIMEOUT) -> SharedLimits:  # fmt: skip
    """Shared limits on the Redis at ``url`` (connections open on first use).

    A bounded pool: a burst waits for a free connection instead of opening
    thousands. No retries inside redis-py: a failure is reported at once and the
    configured failure mode (``redis.unavailable``) applies."""
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # timeout=None: the wait for a free connection is inside the caller's timeout
    pool = BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=None, socket_timeout=timeout,
        socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
    )  # fmt: skip
    return SharedLimits(Redis.from_pool(pool), prefix, timeout, password_of(url), fallback)


def sharing(settings: Settings) -> str:
    """Where rate limits and quotas are counted, in one plain sentence (config check, startup)."""
    if settings.redis_url:
        where = f"shared by every worker and replica in Redis at {redact(settings.redis_url)}"
        if settings.redis_unavailable == "local":
            failing = ("while Redis is unavailable, each process counts on its own "
                       "(redis.unavailable = local): N processes then admit up to N times "
                       "each limit")  # fmt: skip
        else:
            failing = ("while Redis is unavailable, limited keys are refused "
                       "(503 auth_unavailable, detail limits_unavailable)")  # fmt: skip
        return (f"Rate limits, quotas and token budgets: {where} (prefix "
                f"{settings.redis_prefix!r}); {failing}.")  # fmt: skip
    workers = settings.workers
    here = f" (workers: {workers}, so up to {workers}x)" if workers > 1 else ""
    return ("Rate limits, quotas and token budgets: per process (KEYSTILE_REDIS_URL not set): "
            f"N workers or replicas admit up to N times each limit or budget{here}.")  # fmt: skip
