"""Waiting on a condition, not on the clock.

A test that sleeps a fixed time assumes how fast the machine is and breaks first on
a busy one. ``wait_until`` polls what the test can observe until it holds, under a
deadline, and on timeout fails saying what it waited for and the last value seen.
The deadline is how long the test is willing to wait, not a promise of keystile's:
where keystile promises a bound, the test measures the time and asserts the bound.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"waited {timeout:g} s for {what}; last seen: {last!r}")


def _name(read: Callable[..., Any], what: str) -> str:
    return what or getattr(read, "__name__", "a condition")


def wait_until(
    read: Callable[[], T],
    until: Callable[[T], object] = bool,
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Call ``read`` every ``interval`` s until ``until(value)`` holds (by default:
    until the value is truthy) and return that value; fail after ``timeout`` s
    with ``what`` and the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        last = read()
        if until(last):
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(_name(read, what), timeout, last)
        time.sleep(interval)


async def wait_until_async(
    read: Callable[[], T | Awaitable[T]],
    until: Callable[[T], object] = bool,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - polled between reads, nothing to cancel
    interval: float = 0.01,
    what: str = "",
) -> T:
    """``wait_until`` inside an event loop: the loop runs between reads, so a server
    in the same loop makes progress; ``read`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        last = read()
        if inspect.isawaitable(last):
            last = await last
        if until(last):  # type: ignore[arg-type]
            return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _timed_out(_name(read, what), timeout, last)
        await asyncio.sleep(interval)
