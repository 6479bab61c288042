"""Keeping CPython's cycle collector off the request path.

keystile holds a large, long-lived heap: up to ``cache.size`` key records, the
hash filter, the memoised replies. CPython's full collection walks every
tracked object with the event loop stopped; at 100k cached keys that measured
50-100 ms, the whole of the cache-miss p99. So what has lived a second is
frozen (``gc.freeze``: the collector skips it, reference counting still frees
it) and collections see only what is new. Once an hour everything is thawed
and collected once, so a cycle that became garbage after it was frozen does
not outlive that hour.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

FREEZE_EVERY = 1.0  # seconds
THAW_EVERY = 3600.0


async def tend_forever(clock: Callable[[], float] = time.monotonic) -> None:
    thawed = clock()
    gc.collect()
    gc.freeze()
    while True:
        await asyncio.sleep(FREEZE_EVERY)
        if clock() - thawed >= THAW_EVERY:
            gc.unfreeze()
            gc.collect()
            thawed = clock()
        gc.freeze()
