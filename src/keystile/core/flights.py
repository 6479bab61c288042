"""Waiting on the request path: deadlines that need no task, and one read for many
waiters.

The auth listener steps the request path eagerly, outside any task
(:mod:`keystile.eager`). From Python 3.12 on, ``asyncio.timeout`` and
``asyncio.wait_for`` refuse to run there ("Timeout should be used inside a
task"), and on every version ``wait_for`` waits for the work it gave up on to
finish cancelling, which a silent peer (a paused PostgreSQL, a partition) can
make last forever. So the path waits only through this module:

- :func:`settled` waits for a future, with a deadline kept by ``loop.call_later``,
  and never cancels the future it waited on.
- :func:`within` runs a coroutine as a task and waits for it the same way; at the
  deadline it asks the task to cancel and raises :class:`TimeoutError` at once,
  without waiting for the cancel to be acknowledged.
- :class:`Flights` shares one read among concurrent callers (the first requests
  of a key, or of a quota period): the read is a task of its own, so no caller's
  deadline or cancellation cancels it for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from keystile.core.errors import StoreUnavailable

T = TypeVar("T")


async def settled(future: asyncio.Future[T], timeout: float | None = None) -> T:  # noqa: ASYNC109
    """``future``'s result once it is done; :class:`TimeoutError` if it is not done
    within ``timeout`` seconds. ``future`` itself is never cancelled here; a future
    cancelled by someone else reads as :class:`StoreUnavailable` (the work was
    abandoned), not as a cancellation of the caller."""
    if not future.done():
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not woken.done():
                woken.set_result(None)

        future.add_done_callback(wake)
        timer = None if timeout is None else loop.call_later(timeout, wake)
        try:
            await woken
        finally:
            future.remove_done_callback(wake)
            if timer is not None:
                timer.cancel()
        if not future.done():
            raise TimeoutError
    if future.cancelled():
        raise StoreUnavailable("a shared read was cancelled before it finished")
    return future.result()


async def within(work: Coroutine[Any, Any, T], timeout: float) -> T:  # noqa: ASYNC109
    """``await work``, bounded: :class:`TimeoutError` after ``timeout`` seconds, the
    work then cancelled in the background (its cancellation is not waited for)."""
    task = asyncio.ensure_future(work)
    try:
        return await settled(task, timeout)
    except BaseException:
        if not task.done():
            task.cancel()
            task.add_done_callback(_observed)
        raise


def _observed(task: asyncio.Future[Any]) -> None:
    """An abandoned task's outcome, read so that asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()


class Flights(Generic[T]):
    """Reads under way, by key: a second caller of the same key joins the first."""

    def __init__(self) -> None:
        self._pending: dict[Hashable, asyncio.Future[T]] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._pending

    async def read(self, key: Hashable, start: Callable[[], Awaitable[T]]) -> T:
        """``await start()``, or the result of the same read already under way. The
        read runs as its own task: it is shared, so one waiter giving up (its
        deadline, its cancellation) never cancels it for the others."""
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(start())
            pending.add_done_callback(lambda done: self._landed(key, done))
        return await settled(pending)

    def _landed(self, key: Hashable, done: asyncio.Future[T]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        _observed(done)  # waiters re-raise it; none left must not log it as lost
