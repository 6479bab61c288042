from datetime import UTC, datetime

import pytest

from keystile.core.decide import Decision
from keystile.core.keys import Hasher
from keystile.core.model import KeyRecord
from keystile.limits.quotas import Quotas, period
from keystile.limits.usage import UsageMeter
from keystile.manage.accounts import AccountService
from keystile.manage.service import KeyService
from keystile.store import Store
from tests.backends import BOTH

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC).timestamp()


async def spent(quotas: Quotas, record: KeyRecord, now: float) -> int | None:
    """Seconds until a spent quota resets, reading stored usage first as the gate does."""
    if not quotas.loaded(record, now):
        await quotas.load(record, now)
    return quotas.spent(record, now)


def test_periods_are_utc_days_and_calendar_months() -> None:
    day = period("quota_day", NOW)
    assert day == (datetime(2026, 11, 23, tzinfo=UTC).timestamp(),
                   datetime(2026, 11, 24, tzinfo=UTC).timestamp())  # fmt: skip
    december = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    month = (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert period("quota_month", december) == tuple(m.timestamp() for m in month)


async def test_quota_is_spent_and_survives_a_restart(store: Store) -> None:
    record = (await KeyService(store, Hasher()).create("k", limits={"quota_day": 3})).record
    quotas, meter = Quotas(store), UsageMeter()
    for _ in range(2):
        assert await spent(quotas, record, NOW) is None
        quotas.count(record, NOW)
        meter.record(Decision(None, record), NOW)
    await meter.flush(store)
    restarted = Quotas(store)  # a new process: reads what was used today
    assert await spent(restarted, record, NOW) is None
    restarted.count(record, NOW)
    assert await spent(restarted, record, NOW) == 11 * 3600 + 30 * 60
    assert await spent(restarted, record, NOW + 86400) is None  # a new day


async def test_team_quota_covers_all_its_keys(store: Store) -> None:
    keys = KeyService(store, Hasher())
    accounts = AccountService(keys)
    team = await accounts.create_team("ml", {"quota_month": 2})
    user = await accounts.create_user("ana", team.id)
    a = (await keys.create("a", user_id=user.id)).record
    b = (await keys.create("b", user_id=user.id)).record
    a, b = await store.get_key(a.id), await store.get_key(b.id)  # with their team
    quotas = Quotas(store)
    for record in (a, b):
        assert await spent(quotas, record, NOW) is None
        quotas.count(record, NOW)
    assert await spent(quotas, a, NOW) is not None


@pytest.mark.parametrize("name", ["quota_day", "quota_month"])
def test_period_contains_now(name: str) -> None:
    start, end = period(name, NOW)
    assert start <= NOW < end
