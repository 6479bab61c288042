"""Token budgets shared by every worker and replica, in the Redis of shared limits.

The same reservations as :mod:`keystile.tokens`, held in Redis instead of one
process's memory, each step one atomic script:

- :data:`RESERVE` checks every window of the key and its team (a window Redis
  does not hold yet starts from the tokens stored in the usage table) and, only
  if the estimate fits in all of them, adds it to each and records the
  reservation (a hash, and its expiry in a sorted set);
- :data:`REPORT` takes the reservation out and replaces its estimate with the
  tokens reported, in every window it holds: once, whichever replica hears the
  report (a second report finds nothing);
- :data:`RELEASE` gives back the estimates of reservations whose report never
  came (any replica's sweep does it; two sweeps cannot both release one);
- :data:`CHARGE` adds tokens reported with no reservation (by request id).

The secret that signs reservation tokens is shared through Redis too (the first
replica sets it), so that a report forged by anyone is refused before it costs
a Redis call, and one for another replica's reservation is not.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from typing import Any

from keystile.core.decide import Limits
from keystile.core.errors import LimitsUnavailable
from keystile.core.model import KeyRecord
from keystile.limits.shared_limits import SharedLimits
from keystile.limits.tokens import REASONS, TokenBudgets, window

KEEP = 3600  # seconds a window or a reservation outlives its end (clock skew, late sweeps)
SWEEP = 200  # reservations one release script takes at most
log = logging.getLogger("keystile.limits")

# KEYS: n window counters, the reservation hash, the expiry set. ARGV: n, tokens needed
# to fit, estimate, then (limit, stored, ttl ms) per window, then the reservation's ttl
# ms, its expiry, its nonce, key id, route, and the window names joined by spaces.
RESERVE = """
local n, need, estimate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local a = 4
for i = 1, n do
  local limit, stored, ttl = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  a = a + 3
  local used = redis.call('GET', KEYS[i])
  if not used then
    redis.call('SET', KEYS[i], stored, 'PX', ttl)
    used = stored
  end
  if tonumber(used) + need > limit then return {0, i, limit - tonumber(used)} end
end
for i = 1, n do redis.call('INCRBY', KEYS[i], estimate) end
redis.call('HSET', KEYS[n + 1], 'estimate', estimate, 'key', ARGV[a + 3], 'route', ARGV[a + 4],
           'windows', ARGV[a + 5])
redis.call('PEXPIRE', KEYS[n + 1], ARGV[a])
redis.call('ZADD', KEYS[n + 2], ARGV[a + 1], ARGV[a + 2])
return {1, 0, 0}
"""

# KEYS: the reservation hash, the expiry set. ARGV: tokens, nonce.
REPORT = """
local r = redis.call('HMGET', KEYS[1], 'estimate', 'windows', 'key', 'route')
if not r[1] then return {0} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
local delta = tonumber(ARGV[1]) - tonumber(r[1])
for w in string.gmatch(r[2], '%S+') do
  if redis.call('EXISTS', w) == 1 then redis.call('INCRBY', w, delta) end
end
return {1, r[3], r[4]}
"""

# KEYS: the expiry set. ARGV: now, the reservation hashes' prefix, how many at most.
RELEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, nonce in ipairs(due) do
  local key = ARGV[2] .. nonce
  local r = redis.call('HMGET', key, 'estimate', 'windows')
  if r[1] then
    for w in string.gmatch(r[2], '%S+') do
      if redis.call('EXISTS', w) == 1 then redis.call('DECRBY', w, tonumber(r[1])) end
    end
    redis.call('DEL', key)
  end
  redis.call('ZREM', KEYS[1], nonce)
end
return #due
"""

# KEYS: n window counters. ARGV: tokens, then (stored, ttl ms) per window.
CHARGE = """
local tokens = tonumber(ARGV[1])
for i = 1, #KEYS do
  if not redis.call('GET', KEYS[i]) then
    redis.call('SET', KEYS[i], ARGV[2 * i], 'PX', ARGV[2 * i + 1])
  end
  redis.call('INCRBY', KEYS[i], tokens)
end
return 1
"""


class SharedBudgets:
    """Token budgets in Redis; ``local`` supplies what stays per process: stored
    tokens read once per window (where a window starts), the signing of
    reservation tokens, and the usage meter reported tokens go to."""

    def __init__(self, shared: SharedLimits, local: TokenBudgets) -> None:
        self.shared = shared
        self.local = local
        self.prefix = f"{shared.prefix}tokens:"
        self.expiry = f"{self.prefix}expiry"
        self._reserve = shared.script(RESERVE)
        self._report = shared.script(REPORT)
        self._release = shared.script(RELEASE)
        self._charge = shared.script(CHARGE)
        self.started = False  # the shared secret taken

    async def start(self) -> None:
        """Take the signing secret every replica shares (the first one sets it);
        until Redis answers, reservations are signed with this process's own (their
        reports then count here only), and each sweep tries again."""
        client = self.shared.client
        name = f"{self.prefix}secret"
        try:
            await client.set(name, secrets.token_hex(32), nx=True)
            secret = await client.get(name)
        except Exception as exc:
            log.error("token reservations are signed by this process only until Redis "
                      "answers: %s", exc)  # fmt: skip
            return
        self.local.secret = secret if isinstance(secret, bytes) else str(secret).encode()
        self.started = True

    def _windows(self, record: KeyRecord, now: float) -> list[tuple[str, int, int, int]]:
        """(Redis key, limit, stored tokens, ttl ms) per window of ``record``."""
        found = []
        for owner, _, _, name, limit in self.local.owners_of(record):
            start, end = window(name, now)
            stored = 0 if name == "tokens_per_minute" else self.local.used.get((owner, name, start))
            ttl = math.ceil((end - now + KEEP) * 1000)
            found.append((f"{self.prefix}{owner}:{name}:{int(start)}", limit, stored or 0, ttl))
        return found

    async def reserve(
        self, record: KeyRecord, route: str, estimate: int, now: float
    ) -> tuple[str | None, Limits]:
        """Hold ``estimate`` in every window if it fits in all: (the token, no limit
        spent); else (None, the spent budget for the core to refuse with)."""
        windows = self._windows(record, now)
        expires = int(now + self.local.timeout)
        nonce = secrets.token_urlsafe(12)
        keys = [name for name, _, _, _ in windows]
        args: list[Any] = [len(windows), max(estimate, 1), estimate]
        for _, limit, stored, ttl in windows:
            args += [limit, stored, ttl]
        args += [math.ceil((self.local.timeout + KEEP) * 1000), expires, nonce, record.id, route,
                 " ".join(keys)]  # fmt: skip
        keys += [f"{self.prefix}res:{nonce}", self.expiry]
        fits, spent, left = (await self.shared.run(self._reserve, keys, args))[:3]
        if not int(fits):
            name = self.local.owners_of(record)[int(spent) - 1][3]
            retry = max(1, math.ceil(window(name, now)[1] - now))
            return None, Limits(tokens=((REASONS[name], int(left), retry),))
        return self.local.sign(record.id, expires, nonce), Limits()

    async def report(self, token: str, tokens: int, now: float) -> bool:
        """As :meth:`TokenBudgets.report`, once across every replica."""
        verified = self.local.check(token, tokens, now)
        if verified is None:
            return False
        _, nonce = verified
        reply = await self.shared.run(self._report, [f"{self.prefix}res:{nonce}", self.expiry],
                                      [tokens, nonce])  # fmt: skip
        if not int(reply[0]):
            self.local.ignored += 1
            return False
        key_id, route = (part.decode() if isinstance(part, bytes) else str(part)
                         for part in reply[1:3])  # fmt: skip
        self.local.account(key_id, route, tokens, now)
        return True

    async def charge(self, record: KeyRecord, route: str, tokens: int, now: float) -> None:
        windows = self._windows(record, now)
        args: list[Any] = [tokens]
        for _, _, stored, ttl in windows:
            args += [stored, ttl]
        if windows:
            await self.shared.run(self._charge, [name for name, _, _, _ in windows], args)
        self.local.account(record.id, route, tokens, now)

    async def prune(self, now: float) -> int:
        """Release the reservations, any replica's, whose report never came."""
        released = int(await self.shared.run(self._release, [self.expiry],
                                             [now, f"{self.prefix}res:", SWEEP]))  # fmt: skip
        self.local.prune(now)
        return released

    async def sweep(self, now: float) -> None:
        """The periodic :meth:`prune` (taking the shared secret first, if Redis did not
        answer at start); an outage is logged by the shared limits, and the next
        sweep tries again."""
        if not self.started:
            await self.start()
        with contextlib.suppress(LimitsUnavailable):
            await self.prune(now)
