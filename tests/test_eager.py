"""run_eagerly: a coroutine that must wait carries on as a task, and sees what ended
its wait where it waits (a failed future's error; a cancellation)."""

from __future__ import annotations

import asyncio

import pytest

from keystile.serve.eager import run_eagerly


async def test_no_wait_returns_at_once() -> None:
    async def quick() -> int:
        return 7

    assert run_eagerly(quick()) == 7


async def test_a_failed_future_raises_inside_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    async def waits() -> str:
        try:
            await future
        except ConnectionError as exc:  # the coroutine's own handler sees it
            return f"handled {exc}"
        return "no error"

    task = run_eagerly(waits())
    assert isinstance(task, asyncio.Future)
    loop.call_soon(future.set_exception, ConnectionError("refused"))
    assert await task == "handled refused"


async def test_a_result_after_a_wait_and_a_second_wait() -> None:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()

    async def twice() -> int:
        value = await first
        await asyncio.sleep(0)
        return value + 1

    task = run_eagerly(twice())
    assert isinstance(task, asyncio.Future)
    loop.call_soon(first.set_result, 41)
    assert await task == 42


async def test_cancelling_the_task_runs_the_coroutines_cleanup() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    cleaned = []

    async def stuck() -> None:
        try:
            await never
        finally:
            cleaned.append(True)

    task = run_eagerly(stuck())
    assert isinstance(task, asyncio.Future)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
