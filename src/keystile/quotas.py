"""Quotas: allowed requests per UTC day and calendar month, per key and per team.

What was used before this process started comes from the usage table (so quotas
survive restarts), read once per key or team and period; after that this
process counts in memory. Several processes each count their own requests on
top of what was stored when they first looked, so across workers or replicas
a quota can be overrun by up to the usage of one flush interval per process.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from keystile.policy import Verdict
from keystile.store import UNKNOWN, KeyRecord, Store, Unknown

QUOTAS = ("quota_day", "quota_month")


def period(name: str, now: float) -> tuple[float, float]:
    """Start and end (Unix seconds) of the UTC day or month holding ``now``."""
    moment = datetime.fromtimestamp(now, UTC)
    if name == "quota_day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.timestamp(), start.timestamp() + 86400
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start.timestamp(), following.timestamp()


class Quotas:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.used: dict[tuple[str, str, float], int] = {}

    def check_now(self, record: KeyRecord, now: float) -> Verdict | Unknown | None:
        """A denial if a quota is spent, else None; ``UNKNOWN`` when a period's
        stored usage has not been read yet (:meth:`load` it). Call :meth:`count`
        once allowed."""
        for owner, _, _, limits in self._owners(record):
            for name in QUOTAS:
                if name not in limits:
                    continue
                start, end = period(name, now)
                used = self.used.get((owner, name, start))
                if used is None:
                    return UNKNOWN
                if used >= int(limits[name]):
                    return Verdict(False, None, max(1, math.ceil(end - now)))
        return None

    async def load(self, record: KeyRecord, now: float) -> None:
        """Read the stored usage of every period of ``record`` not in memory yet."""
        for owner, kind, owner_id, limits in self._owners(record):
            for name in QUOTAS:
                if name not in limits:
                    continue
                start = period(name, now)[0]
                entry = (owner, name, start)
                if entry not in self.used:
                    if len(self.used) > 100_000:  # old periods, idle keys: read again when needed
                        self.used.clear()
                    self.used[entry] = await self.store.allowed_since(kind, owner_id, start)

    async def check(self, record: KeyRecord, now: float) -> Verdict | None:
        """:meth:`check_now`, reading the store first when it must."""
        verdict = self.check_now(record, now)
        while isinstance(verdict, Unknown):  # again if another load cleared ours meanwhile
            await self.load(record, now)
            verdict = self.check_now(record, now)
        return verdict

    def count(self, record: KeyRecord, now: float) -> None:
        for owner, _, _, limits in self._owners(record):
            for name in QUOTAS:
                if name in limits:
                    entry = (owner, name, period(name, now)[0])
                    self.used[entry] = self.used.get(entry, 0) + 1

    @staticmethod
    def _owners(record: KeyRecord) -> list[tuple[str, str, str, dict[str, int]]]:
        owners = [(f"key:{record.id}", "key", record.id, record.limits)]
        if record.team is not None and record.team.limits:
            owners.append((f"team:{record.team.id}", "team", record.team.id, record.team.limits))
        return owners
