"""The bench's synthetic agent: a run that yields stamped text deltas at a fixed rate.

Runstream's producer (``bench.producer``) and the in-memory baseline
(``bench.baseline_app``) both run this schedule, so both sides stream the same
events at the same times; the client turns each stamp into a latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

Emit = Callable[[dict[str, Any]], Awaitable[None]]


def stamped_delta() -> dict[str, Any]:
    """A text delta whose text is the moment it was yielded (merged deltas stay parseable)."""
    return {"type": "text_delta", "delta": f"{time.time():.6f} "}


async def stamp_run(emit: Emit, *, events: int, rate: float, offset: float = 0.0) -> None:
    """Yield ``events`` stamped deltas, ``rate`` a second (0: as fast as possible),
    starting ``offset`` seconds from now (jobs are staggered, not in lockstep)."""
    loop = asyncio.get_running_loop()
    start = loop.time() + offset
    for i in range(events):
        if rate:
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await emit(stamped_delta())


def stagger(index: int, jobs: int, rate: float) -> float:
    """Job ``index``'s start offset: the jobs' first events spread over one period."""
    return index / jobs / rate if rate else 0.0
