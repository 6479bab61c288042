import pytest

from keystile.core import reasons
from keystile.core.decide import Decision
from keystile.core.errors import StoreUnavailable
from keystile.core.keys import Hasher
from keystile.limits.usage import UsageMeter
from keystile.manage.service import KeyService
from keystile.store import Store
from tests.backends import BOTH

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL


async def test_counts_reach_the_store_in_batches(store: Store) -> None:
    record = (await KeyService(store, Hasher()).create("k")).record
    meter = UsageMeter()
    for _ in range(5):
        meter.record(Decision(None, record), 7200.5)
    meter.record(Decision(reasons.RATE_LIMITED, record), 7201.0)
    meter.record(Decision(reasons.MISSING_API_KEY), 7201.0)  # no key: nothing to count
    assert await meter.flush(store) == 6
    meter.record(Decision(None, record), 7300.0)
    await meter.flush(store)
    assert await store.usage(record.id) == [(7200, "", "allow", 6), (7200, "", "rate_limited", 1)]
    assert (await store.get_key(record.id)).last_used_at == 7300.0


async def test_a_failed_flush_keeps_the_counts(store: Store) -> None:
    record = (await KeyService(store, Hasher()).create("k")).record
    meter = UsageMeter()
    meter.record(Decision(None, record), 100.0)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await meter.flush(store)
    assert meter.pending == 1 and meter.last_used == {record.id: 100.0}
