"""Run a coroutine to its first real wait on the caller's stack.

The request path is one ``async`` function: a cached key never waits, so the
listener calls it like a plain function and gets the answer at once; only a
request that must wait for the store becomes a task. (Python 3.12's eager task
factory does the same for every task; this is the one place keystile needs it.)
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def run_eagerly(coro: Coroutine[Any, Any, T]) -> T | asyncio.Future[T]:
    """The coroutine's result if it finishes without waiting, else a Task that
    carries on from where it stopped. Its exceptions propagate either way."""
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    return asyncio.ensure_future(_resume(coro, waiting))


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], waiting: Any) -> Generator[Any, None, T]:
    """Hand the task the future ``coro`` waits on, then go on driving ``coro``.

    The task throws in what ended the wait. When the future itself failed (a store
    or Redis error set on it), ``coro`` is simply resumed: its ``await`` reads the
    future and raises there, where its own ``except`` clauses see it. Anything
    else (the task cancelled at shutdown) is thrown into ``coro`` where it waits."""
    try:
        yield waiting
    except BaseException as exc:
        if not (isinstance(waiting, asyncio.Future) and waiting.done()):
            try:
                waiting = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            return (yield from _resume(coro, waiting))
    result: T = yield from coro
    return result
