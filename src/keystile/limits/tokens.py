"""Token budgets: tokens per minute, UTC day and calendar month, per key and per team.

keystile never sees a response body, so it cannot count tokens itself: the
upstream (or the proxy in front of it) reports them after the fact. Admission
therefore works on reservations:

- before an allow, the core checks every budget of the key and its team against
  what is used there: tokens reported, plus tokens reserved by requests still
  in flight (:meth:`TokenBudgets.state`); a request whose estimate does not fit
  is refused (429 ``quota_exceeded``, ``Retry-After`` at the window's reset);
- an allow reserves the route's estimate in every window (:meth:`reserve`) and
  hands the proxy a reservation token (``X-Keystile-Reservation``);
- the report (:meth:`report`: nginx's syslog line, Envoy's access log, or the
  admin API's ``POST /api/v1/usage``) names that token and the tokens spent:
  the estimate is replaced by the real figure, once (a second report of the
  same reservation is ignored);
- a reservation with no report within ``timeout`` is released (its estimate
  given back), so a lost report cannot hold a budget forever.

So a budget is overrun by at most what requests in flight spend beyond their
estimates (see docs/token-budgets.md).

A token is ``KEY_ID.EXPIRES.NONCE.MAC``: the MAC (HMAC-SHA256 under a secret
made once per server, before its workers fork, so every worker checks every
other's) makes a report that names no reservation keystile issued worthless,
whoever sends it. A valid report for a reservation this process does not hold
(another worker's) is counted against the key and its team here.

Day and month windows start from the tokens stored in the usage table (budgets
survive restarts); minute windows start empty. This module counts in the
process; :mod:`keystile.shared_budgets` does the same in Redis for every worker
and replica.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from keystile.core import reasons
from keystile.core.flights import Flights
from keystile.core.model import KeyRecord
from keystile.core.reasons import Reason
from keystile.limits.quotas import period

BUDGETS = ("tokens_per_minute", "tokens_per_day", "tokens_per_month")
REASONS = {
    "tokens_per_minute": reasons.TOKENS_PER_MINUTE,
    "tokens_per_day": reasons.TOKENS_PER_DAY,
    "tokens_per_month": reasons.TOKENS_PER_MONTH,
}
MAX_REPORT = 10**9  # tokens one report may claim
RESERVATION_TIMEOUT = 300.0  # seconds a reservation waits for its report
SECRET = os.urandom(32)  # per server: made at import, before any worker forks
_TOKEN_RE = re.compile(
    r"([a-z]{1,8}_[A-Za-z0-9]{1,40})\.(\d{10})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{22})"
)

Window = tuple[str, str, float]  # (owner, budget, window start)
# (budget's reason, tokens left, seconds until the window resets): what the core reads
State = tuple[tuple[Reason, int, int], ...]


def window(name: str, now: float) -> tuple[float, float]:
    """Start and end of the budget's window holding ``now`` (UTC minute, day, month)."""
    if name == "tokens_per_minute":
        start = now // 60 * 60
        return start, start + 60
    return period("quota_day" if name == "tokens_per_day" else "quota_month", now)


Owner = tuple[str, str, str, str, int]  # (owner, kind, id, budget, limit)


def owners(record: KeyRecord) -> tuple[Owner, ...]:
    """(owner, kind, id, budget, limit) for each token budget of the key and its team."""
    found = []
    candidates = [(f"key:{record.id}", "key", record.id, record.limits)]
    if record.team is not None:
        candidates.append((f"team:{record.team.id}", "team", record.team.id, record.team.limits))
    for owner, kind, owner_id, limits in candidates:
        for name in BUDGETS:
            if name in limits:
                found.append((owner, kind, owner_id, name, int(limits[name])))
    return tuple(found)


@dataclass(slots=True)
class Reservation:
    key_id: str
    route: str
    estimate: int
    windows: tuple[Window, ...]
    expires: float


# (key id, hour start, route, tokens): where reported tokens go (the usage meter)
Sink = Callable[[str, int, str, int], None]


class TokenBudgets:
    """Token budgets counted in this process."""

    def __init__(
        self,
        stored: Callable[[str, str, float], Awaitable[int]],
        *,
        timeout: float = RESERVATION_TIMEOUT,
        secret: bytes = SECRET,
        sink: Sink | None = None,
        record_of: Callable[[str], Awaitable[KeyRecord | None]] | None = None,
    ) -> None:
        self.stored = stored  # (kind, owner id, since) -> tokens in the usage table
        self.timeout = timeout
        self.secret = secret
        self.sink = sink
        self.record_of = record_of  # a key by id: reports for another worker's reservation
        self.used: dict[Window, int] = {}
        self.reservations: dict[str, Reservation] = {}  # by nonce
        self.reported: dict[str, float] = {}  # nonces reported -> when they expire
        self.ignored = 0  # reports that named no reservation keystile issued (forged, late)
        self._reads: Flights[int] = Flights()  # concurrent first requests: one read
        # id(record) -> (record, its budgets): built once per cached record, not per request
        self._owners: dict[int, tuple[KeyRecord, tuple[Owner, ...]]] = {}

    def owners_of(self, record: KeyRecord) -> tuple[Owner, ...]:
        """:func:`owners` of ``record``, kept while the record is the cached one."""
        memo = self._owners.get(id(record))
        if memo is not None and memo[0] is record:
            return memo[1]
        if len(self._owners) > 100_000:
            self._owners.clear()
        found = owners(record)
        self._owners[id(record)] = (record, found)
        return found

    # -- admission -------------------------------------------------------------------

    def loaded(self, record: KeyRecord, now: float) -> bool:
        """Whether every day and month window of ``record`` is in memory."""
        return all((owner, name, window(name, now)[0]) in self.used
                   for owner, _, _, name, _ in self.owners_of(record)
                   if name != "tokens_per_minute")  # fmt: skip

    async def load(self, record: KeyRecord, now: float) -> None:
        """Read the stored tokens of every day and month window not in memory yet."""
        for owner, kind, owner_id, name, _ in self.owners_of(record):
            start = window(name, now)[0]
            entry = (owner, name, start)
            if name != "tokens_per_minute" and entry not in self.used:
                spent = await self._reads.read(entry, partial(self.stored, kind, owner_id, start))
                self.used.setdefault(entry, spent)

    def state(self, record: KeyRecord, now: float) -> State:
        """Each budget's tokens left (reported and reserved taken off) and reset."""
        found = []
        for owner, _, _, name, limit in self.owners_of(record):
            start, end = window(name, now)
            used = self.used.get((owner, name, start))
            if used is None and name != "tokens_per_minute":
                used = limit  # not read yet: spent (fail closed), never unused
            left = limit - (used or 0)
            found.append((REASONS[name], left, max(1, math.ceil(end - now))))
        return tuple(found)

    def reserve(self, record: KeyRecord, route: str, estimate: int, now: float) -> str:
        """Hold ``estimate`` tokens in every window of ``record``; the reservation token."""
        windows = tuple((owner, name, window(name, now)[0])
                        for owner, _, _, name, _ in self.owners_of(record))  # fmt: skip
        for entry in windows:
            self.used[entry] = self.used.get(entry, 0) + estimate
        expires = int(now + self.timeout)
        nonce = secrets.token_urlsafe(12)
        self.reservations[nonce] = Reservation(record.id, route, estimate, windows, expires)
        return self.sign(record.id, expires, nonce)

    def sign(self, key_id: str, expires: int, nonce: str) -> str:
        """The reservation token the proxy carries to the report."""
        return f"{key_id}.{expires}.{nonce}.{self._mac(key_id, expires, nonce)}"

    def _mac(self, key_id: str, expires: int, nonce: str) -> str:
        digest = hmac.new(self.secret, f"{key_id}.{expires}.{nonce}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()[:16]).decode().rstrip("=")

    # -- reports ---------------------------------------------------------------------

    def verify(self, token: str, now: float) -> tuple[str, str] | None:
        """(key id, nonce) of a reservation token keystile issued and that has not
        expired; None for anything else (forged, malformed, too old)."""
        match = _TOKEN_RE.fullmatch(token) if len(token) <= 120 else None
        if match is None:
            return None
        key_id, expires, nonce, mac = match.groups()
        if int(expires) < now or not hmac.compare_digest(mac, self._mac(key_id, int(expires),
                                                                         nonce)):  # fmt: skip
            return None
        return key_id, nonce

    def check(self, token: str, tokens: int, now: float) -> tuple[str, str] | None:
        """(key id, nonce) of a report worth counting: a token keystile issued, not
        expired, and a plausible count; None (and counted as ignored) otherwise."""
        plausible = isinstance(tokens, int) and not isinstance(tokens, bool)
        verified = self.verify(token, now) if plausible and 0 <= tokens <= MAX_REPORT else None
        if verified is None:
            self.ignored += 1
        return verified

    def account(self, key_id: str, route: str, tokens: int, now: float) -> None:
        """Reported tokens into the usage meter (stored with the next flush)."""
        if self.sink is not None and tokens:
            self.sink(key_id, int(now // 3600 * 3600), route, tokens)

    async def report(self, token: str, tokens: int, now: float) -> bool:
        """Count ``tokens`` for the reservation ``token`` names; False when ignored
        (not one keystile issued, expired, or reported already)."""
        verified = self.check(token, tokens, now)
        if verified is None:
            return False
        key_id, nonce = verified
        if nonce in self.reported:
            self.ignored += 1
            return False
        self.reported[nonce] = now + self.timeout
        held = self.reservations.pop(nonce, None)
        if held is not None:
            for entry in held.windows:
                if entry in self.used:  # else dropped meanwhile (memory cap)
                    self.used[entry] += tokens - held.estimate
            self.account(key_id, held.route, tokens, now)
            return True
        # another worker's reservation (its estimate is released there): the key's
        record = None if self.record_of is None else await self.record_of(key_id)
        if record is None:
            return False
        await self.charge(record, "", tokens, now)
        return True

    async def charge(self, record: KeyRecord, route: str, tokens: int, now: float) -> None:
        """Count ``tokens`` spent by ``record`` with no reservation (the admin API's
        reports by request id, another worker's reservations)."""
        for owner, _, _, name, _ in self.owners_of(record):
            entry = (owner, name, window(name, now)[0])
            if entry in self.used or name == "tokens_per_minute":  # else read when needed
                self.used[entry] = self.used.get(entry, 0) + tokens
        self.account(record.id, route, tokens, now)

    async def sweep(self, now: float) -> None:
        """The periodic :meth:`prune`, as the shared budgets' (which ask Redis)."""
        self.prune(now)

    def prune(self, now: float) -> int:
        """Release reservations whose report never came, forget old windows and
        reported nonces; how many reservations were released."""
        expired = [nonce for nonce, held in self.reservations.items() if held.expires < now]
        for nonce in expired:
            held = self.reservations.pop(nonce)
            for entry in held.windows:
                if entry in self.used:
                    self.used[entry] -= held.estimate
        self.reported = {n: at for n, at in self.reported.items() if at >= now}
        # a window a reservation still holds ended less than a timeout ago
        self.used = {entry: used for entry, used in self.used.items()
                     if window(entry[1], entry[2])[1] + self.timeout > now}  # fmt: skip
        return len(expired)
