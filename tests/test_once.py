"""Check-then-act, made atomic: an action runs once per submission token, and "count,
then insert" (self-service keys per person) holds, under concurrency in one
process and across processes (two Store objects on one store: what two workers or
replicas are), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keystile.core.errors import InvalidInput
from keystile.core.keys import Hasher
from keystile.identity.sso import AtLimit, KeyPolicy, SelfServiceKeys
from keystile.manage.accounts import AccountService
from keystile.manage.once import once
from keystile.manage.service import KeyService
from keystile.store import Store
from tests.backends import BOTH

BACKENDS = BOTH


@pytest.fixture
async def stores(db_location: Path | str) -> AsyncIterator[list[Store]]:
    """Two processes' views of one store (the first creates it)."""
    async with await Store.open(db_location) as first, await Store.open(db_location) as second:
        yield [first, second]


async def test_an_action_runs_once_and_every_duplicate_gets_its_answer(
    stores: list[Store],
) -> None:
    runs = 0

    async def act() -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.1)  # overlapping submissions arrive meanwhile
        return "made-1"

    done = await asyncio.gather(*(once(stores[i % 2], "form:1", act, lambda v: {"id": v})
                                  for i in range(10)))  # fmt: skip
    assert runs == 1
    assert [d.answer for d in done] == [{"id": "made-1"}] * 10
    assert sum(d.made is not None for d in done) == 1  # one submission shows what it made
    later = await once(stores[1], "form:1", act, lambda v: {"id": v})
    assert later.made is None and later.answer == {"id": "made-1"} and runs == 1


async def test_a_failed_action_gives_the_token_back(stores: list[Store]) -> None:
    async def bad() -> str:
        raise InvalidInput("name", "is empty")

    async def good() -> str:
        return "made"

    with pytest.raises(InvalidInput):
        await once(stores[0], "form:2", bad, lambda v: {"id": v})
    done = await once(stores[1], "form:2", good, lambda v: {"id": v})  # the form sent again
    assert done.made == "made"


async def test_ten_parallel_self_service_requests_make_at_most_the_cap(
    stores: list[Store],
) -> None:
    """Ten parallel POSTs of the self-service page made ten keys against a cap of 3."""
    services = [KeyService(store, Hasher()) for store in stores]
    user = await AccountService(services[0]).create_user("ana@example.com")
    pages = [SelfServiceKeys(AccountService(s), KeyPolicy(limit=3)) for s in services]
    results = await asyncio.gather(*(pages[i % 2].issue(user.id, "test") for i in range(10)),
                                   return_exceptions=True)  # fmt: skip
    outcome = Counter(type(r).__name__ for r in results)
    assert outcome == {"Issued": 3, "AtLimit": 7}, results
    assert len(await pages[0].active(user.id)) == 3
    refused = next(r for r in results if isinstance(r, AtLimit))
    assert refused.oldest is not None  # named, so the person knows what to delete
