"""Retention: delete finished jobs older than a cutoff, with their events, in small batches.

Why batches and not time partitions (docs/analytics.md has the long form): every
stream read is ``WHERE job_id = ? AND seq > ?``, which carries no time, so a
time-partitioned log would probe every partition's index on every read; and
retention is per job (a conversation turn is kept or dropped whole), which a
partition boundary would cut through. Each batch is one short autocommit
statement that locks only rows nobody else writes (a finished job takes no more
appends), so streams, appends and analytics go on while it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from runstream.db import queries
from runstream.db.connector import Pool, one_row

JOBS_PER_BATCH = 500
EVENTS_PER_BATCH = 5000


@dataclass(frozen=True)
class PruneCount:
    jobs: int
    events: int


async def candidates(pool: Pool, cutoff: datetime) -> PruneCount:
    """What a prune with this cutoff would delete (exact, and cheap: no event is read)."""
    async with pool.connection() as conn:
        cur = await conn.execute(queries.PRUNE_CANDIDATES, {"cutoff": cutoff})
        row = await one_row(cur)
    return PruneCount(row["jobs"], row["events"])


async def prune(
    pool: Pool,
    cutoff: datetime,
    *,
    jobs_per_batch: int = JOBS_PER_BATCH,
    events_per_batch: int = EVENTS_PER_BATCH,
) -> AsyncIterator[PruneCount]:
    """Delete, yielding what each batch deleted (for a progress display).

    Events go first, in slices of at most ``events_per_batch`` rows, then the job
    rows: a job is never left half-deleted with its row gone and events behind.
    """
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(queries.PRUNE_NEXT_JOBS, {"cutoff": cutoff, "limit": jobs_per_batch})
            ids = [row["id"] for row in await cur.fetchall()]
        if not ids:
            return
        while True:
            async with pool.connection() as conn:
                cur = await conn.execute(queries.PRUNE_EVENTS, {"ids": ids, "limit": events_per_batch})
            if cur.rowcount == 0:
                break
            yield PruneCount(0, cur.rowcount)
        async with pool.connection() as conn:
            cur = await conn.execute(queries.PRUNE_JOBS, {"ids": ids})
        if cur.rowcount == 0:
            return  # another prune took these jobs: it finishes the work
        yield PruneCount(cur.rowcount, 0)
