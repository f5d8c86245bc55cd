"""The loops a worker process runs beside its jobs (the supervisor, whose ticks
are also the heartbeat, and the reaper), kept alive whatever goes wrong in them.

A tick that cannot reach the database is expected (an outage): it is logged as a
warning and the next tick comes at the usual interval. Any other exception is a
defect, not an outage: it is logged with its traceback and the loop goes on
after a backoff (doubling, capped), so it neither dies silently, leaving the
worker taking jobs whose heartbeats no longer beat, nor spins on the defect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from runstream.db.errors import DatabaseUnavailable

log = logging.getLogger("runstream.worker")

MAX_BACKOFF_S = 60.0


def backoff_s(interval_s: float, failures: int) -> float:
    """The pause after ``failures`` unexpected failures in a row: 2, 4, 8 … intervals, capped."""
    return min(MAX_BACKOFF_S, interval_s * 2**failures)


async def keep_running(name: str, tick: Callable[[], Awaitable[object]], interval_s: float) -> None:
    """Call ``tick`` every ``interval_s`` until cancelled (see the module)."""
    failures = 0
    while True:
        await asyncio.sleep(backoff_s(interval_s, failures) if failures else interval_s)
        try:
            await tick()
        except DatabaseUnavailable as exc:
            # Keep going: the next tick may reach the database again.
            log.warning("%s: database unavailable: %s", name, exc)
        except Exception:
            failures += 1
            log.exception(
                "%s: tick failed unexpectedly (%d in a row); next in %.1fs",
                name,
                failures,
                backoff_s(interval_s, failures),
            )
        else:
            failures = 0
