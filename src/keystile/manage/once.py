"""Run an action once per submission, whichever worker or replica hears it.

A form's one-time token, an API call's ``Idempotency-Key``: the first submission
claims the token in the store (one insert, atomic on SQLite and PostgreSQL) and
runs the action; a duplicate that arrives meanwhile waits for the first one's
answer and gets it (never a second key, never a 503); one that arrives later gets
it at once. An action that fails gives the token back, so the person can send the
form again. The stored answer never holds a secret (a new key is shown only to
the submission that made it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from keystile.core.errors import Conflict

T = TypeVar("T")
WAIT = 10.0  # seconds a duplicate waits for the first submission's answer
POLL = 0.05  # seconds between two looks at it


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    answer: dict[str, Any]  # as stored: what every submission of the token is told
    made: T | None  # the action's result, for the submission that ran it; None: a duplicate


class Claims(Protocol):
    async def claim(self, key: str) -> bool: ...
    async def settle(self, key: str, response: dict[str, Any]) -> None: ...
    async def release(self, key: str) -> None: ...
    async def claimed(self, key: str) -> tuple[bool, dict[str, Any] | None]: ...


async def once(
    store: Claims,
    token: str,
    act: Callable[[], Awaitable[T]],
    answer: Callable[[T], dict[str, Any]],
    *,
    wait: float = WAIT,
) -> Done[T]:
    """The stored answer, with ``act()``'s result for the submission that ran it.
    ``answer`` makes the stored answer from the result (nothing secret)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        if await store.claim(token):
            try:
                result = await act()
            except BaseException:
                await asyncio.shield(store.release(token))
                raise
            stored = answer(result)
            await store.settle(token, stored)
            return Done(stored, result)
        found, earlier = await store.claimed(token)
        if earlier is not None:
            return Done(earlier, None)
        if found and loop.time() > deadline:
            raise Conflict("the same submission is still being handled; try again shortly")
        if found:
            await asyncio.sleep(POLL)
        # not found: the first one failed and gave it back; claim it again
