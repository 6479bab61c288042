"""Flights: concurrent reads of one thing share one read; an error reaches every
waiter; a waiter that gives up cancels nobody else's."""

from __future__ import annotations

import asyncio

import pytest

from keystile.flights import Flights


async def test_concurrent_reads_share_one() -> None:
    flights: Flights[int] = Flights()
    calls = 0

    async def read() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    results = await asyncio.gather(*(flights.read("k", read) for _ in range(300)))
    assert results == [42] * 300 and calls == 1
    assert await flights.read("k", read) == 42 and calls == 2  # done: the next reads again


async def test_an_error_reaches_every_waiter() -> None:
    flights: Flights[int] = Flights()

    async def fails() -> int:
        await asyncio.sleep(0.01)
        raise ConnectionError("down")

    results = await asyncio.gather(*(flights.read("k", fails) for _ in range(5)),
                                   return_exceptions=True)  # fmt: skip
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_waiter_giving_up_cancels_nobody_else() -> None:
    flights: Flights[int] = Flights()

    async def slow() -> int:
        await asyncio.sleep(0.05)
        return 7

    first = asyncio.ensure_future(flights.read("k", slow))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(flights.read("k", slow), 0.01)
    assert await first == 7
