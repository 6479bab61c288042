"""One read for many waiters: concurrent requests that need the same stored figure
(a quota's usage, a token budget's spend, for the first requests of a key in a
period) share one store read instead of each sending its own. A burst of 300
first requests is then one query, not 300 queued behind a small pool, which on
PostgreSQL ran past the read's timeout.

The first caller reads inline (as :class:`keystile.cache.CachedLookup` does for
keys); the others wait on a shielded future, so one waiter's timeout cancels
nobody else's read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Flights(Generic[T]):
    def __init__(self) -> None:
        self._pending: dict[Hashable, asyncio.Future[T]] = {}

    async def read(self, key: Hashable, start: Callable[[], Awaitable[T]]) -> T:
        """``await start()``, or the result of the same read already under way."""
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        pending = self._pending[key] = asyncio.get_running_loop().create_future()
        try:
            value = await start()
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except Exception as exc:
            pending.set_exception(exc)
            pending.exception()  # marked retrieved: waiters (if any) re-raise it
            raise
        else:
            pending.set_result(value)
        finally:
            del self._pending[key]
        return value
