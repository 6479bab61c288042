"""Flights: concurrent reads of one thing share one read; an error reaches every
waiter; a waiter that gives up cancels nobody else's."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from keystile.core.errors import StoreUnavailable
from keystile.core.flights import Flights, within
from keystile.serve.eager import run_eagerly

T = TypeVar("T")


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


async def test_the_first_waiter_giving_up_cancels_nobody_else() -> None:
    """The first caller used to run the read inline: its deadline cancelled the read
    and every other waiter got CancelledError (no answer at all on the listener)."""
    flights: Flights[int] = Flights()

    async def slow() -> int:
        await asyncio.sleep(0.05)
        return 7

    first = asyncio.ensure_future(within(flights.read("k", slow), 0.01))
    await asyncio.sleep(0)
    others = [asyncio.ensure_future(flights.read("k", slow)) for _ in range(20)]
    with pytest.raises(TimeoutError):
        await first
    assert await asyncio.gather(*others) == [7] * 20


async def test_a_read_cancelled_under_its_waiters_is_an_error_not_a_cancellation() -> None:
    flights: Flights[int] = Flights()
    started = asyncio.Event()

    async def stuck() -> int:
        started.set()
        await asyncio.sleep(10)
        return 0

    waiters = [asyncio.ensure_future(flights.read("k", stuck)) for _ in range(5)]
    await started.wait()
    flights._pending["k"].cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results


async def _stepped(coro: Coroutine[Any, Any, T]) -> T | asyncio.Future[T]:
    """What the auth listener does: the coroutine stepped eagerly in a loop
    callback, outside any task."""
    loop = asyncio.get_running_loop()
    stepped: asyncio.Future[T | asyncio.Future[T]] = loop.create_future()

    def step() -> None:
        assert asyncio.current_task() is None
        stepped.set_result(run_eagerly(coro))

    loop.call_soon(step)
    return await stepped


async def test_within_needs_no_task() -> None:
    """Python 3.12+: asyncio.timeout/wait_for raise 'Timeout should be used inside a
    task' when stepped outside one, as the listener does. within() does not."""

    async def read() -> int:
        await asyncio.sleep(0.01)
        return 5

    async def path() -> int:
        return await within(read(), 1.0)

    task = await _stepped(path())
    assert isinstance(task, asyncio.Future)
    assert await task == 5


async def test_within_times_out_outside_a_task_without_waiting_for_the_cancel() -> None:
    """A peer gone silent: the work ignores its cancellation for a while (as asyncpg
    waits for the server to acknowledge a cancel); the deadline still holds."""
    released = asyncio.Event()

    async def deaf() -> int:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await released.wait()  # the cancel is 'acknowledged' only later
                raise
        return 0

    async def path() -> str:
        try:
            await within(deaf(), 0.05)
        except TimeoutError:
            return "timed out"
        return "answered"

    loop = asyncio.get_running_loop()
    started = loop.time()
    task = await _stepped(path())
    assert isinstance(task, asyncio.Future)
    assert await task == "timed out"
    assert loop.time() - started < 0.5
    released.set()


async def test_within_returns_the_result_and_raises_the_error() -> None:
    async def fine() -> int:
        await asyncio.sleep(0)
        return 3

    async def broken() -> int:
        await asyncio.sleep(0)
        raise ConnectionError("refused")

    assert await within(fine(), 1) == 3
    with pytest.raises(ConnectionError):
        await within(broken(), 1)
