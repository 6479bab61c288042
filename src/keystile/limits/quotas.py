"""Quotas: allowed requests per UTC day and calendar month, per key and per team.

What was used before this process started comes from the usage table (so quotas
survive restarts), read once per key or team and period; after that this
process counts in memory. Several processes each count their own requests on
top of what was stored when they first looked, so across workers or replicas
a quota can be overrun by up to the usage of one flush interval per process,
unless Redis shares them (:mod:`keystile.shared_limits`, which starts its
counters from what is read here).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import partial

from keystile.core.flights import Flights
from keystile.core.model import KeyRecord
from keystile.store import Store

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
        self._reads: Flights[int] = Flights()  # concurrent first requests: one read

    def spent(self, record: KeyRecord, now: float) -> int | None:
        """Seconds until the first spent quota of ``record`` resets, or None.

        Reads memory only: call :meth:`load` first when :meth:`loaded` says no.
        A period not in memory counts as spent (fail closed), never as unused."""
        for owner, _, _, limits in self._owners(record):
            for name in QUOTAS:
                if name not in limits:
                    continue
                start, end = period(name, now)
                used = self.used.get((owner, name, start))
                if used is None or used >= int(limits[name]):
                    return max(1, math.ceil(end - now))
        return None

    def loaded(self, record: KeyRecord, now: float) -> bool:
        """Whether every period of ``record`` at ``now`` is in memory."""
        for owner, _, _, limits in self._owners(record):
            for name in QUOTAS:
                if name in limits and (owner, name, period(name, now)[0]) not in self.used:
                    return False
        return True

    async def load(self, record: KeyRecord, now: float) -> None:
        """Read the stored usage of every period of ``record`` not in memory yet."""
        for owner, kind, owner_id, limits in self._owners(record):
            for name in QUOTAS:
                if name not in limits:
                    continue
                start = period(name, now)[0]
                entry = (owner, name, start)
                if entry not in self.used:
                    used = await self._reads.read(
                        entry, partial(self.store.allowed_since, kind, owner_id, start)
                    )
                    if len(self.used) > 100_000:  # old periods, idle keys: read again when needed
                        self.used.clear()
                    self.used.setdefault(entry, used)

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
