"""Retention: finished jobs older than a cutoff go, with their events.

Events live in monthly partitions of job ids (db/partitions.py), so retention
drops whole partitions: a catalog change that frees the month's files at once,
whatever it holds, with no row deleted, no bloat left for vacuum, almost no WAL.
A partition is detached (an instant's exclusive lock on the log), then its
table dropped on its own (its files freed, no lock on the log). A month's
partition goes when every job in it finished before the cutoff (a
job's events all live in the partition of its creation month): what is kept is
at most a month more than asked, never less. Its job rows are then deleted in
batches of ids (a range scan of the primary key).

Jobs whose events lie in the default partition (ids from before partitioning)
are deleted as before, job by job in small batches: each batch is one short
autocommit statement that locks only rows nobody else writes (a finished job
takes no more appends), so streams, appends and analytics go on while it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from psycopg import errors, sql

from runstream.db import queries
from runstream.db.connector import Pool, one_row
from runstream.db.partitions import Partition, attached_partitions

JOBS_PER_BATCH = 500
EVENTS_PER_BATCH = 5000
DROP_ATTEMPTS = 5


@dataclass(frozen=True)
class PruneCount:
    jobs: int
    events: int


@dataclass(frozen=True)
class PartitionCount:
    """A partition, its jobs and events, and how many of its jobs must stay."""

    partition: Partition
    jobs: int
    events: int
    keeping: int

    @property
    def droppable(self) -> bool:
        return self.keeping == 0


@dataclass(frozen=True)
class PrunePlan:
    """What a prune with a cutoff would do: partitions to drop or keep (those
    that ended before the cutoff), and the jobs deleted one by one."""

    partitions: list[PartitionCount] = field(default_factory=list)
    outside: PruneCount = PruneCount(0, 0)

    @property
    def total(self) -> PruneCount:
        dropped = [p for p in self.partitions if p.droppable]
        return PruneCount(
            sum(p.jobs for p in dropped) + self.outside.jobs, sum(p.events for p in dropped) + self.outside.events
        )


def _bounds(partitions: list[Partition]) -> dict[str, list]:
    return {"lows": [p.low for p in partitions], "highs": [p.high for p in partitions]}


async def plan(pool: Pool, cutoff: datetime) -> PrunePlan:
    """Exact and cheap: no event is read (seqs are gap-free: a job has last_seq + 1 events)."""
    async with pool.connection() as conn:
        partitions = await attached_partitions(conn)
        counts = []
        for partition in partitions:
            if partition.end > cutoff:
                continue
            cur = await conn.execute(
                queries.PARTITION_JOBS, {"low": partition.low, "high": partition.high, "cutoff": cutoff}
            )
            row = await one_row(cur)
            counts.append(PartitionCount(partition, row["jobs"], row["events"], row["keeping"]))
        cur = await conn.execute(queries.PRUNE_CANDIDATES, {"cutoff": cutoff, **_bounds(partitions)})
        row = await one_row(cur)
    return PrunePlan(counts, PruneCount(row["jobs"], row["events"]))


async def candidates(pool: Pool, cutoff: datetime) -> PruneCount:
    """What a prune with this cutoff would delete."""
    return (await plan(pool, cutoff)).total


async def drop_partition(pool: Pool, partition: Partition, cutoff: datetime) -> PartitionCount | None:
    """Drop ``partition`` if every job in it still finished before ``cutoff``
    (checked again under the partition lock); None when it must stay. A detach
    that cannot get its lock soon is tried again, a few times."""
    for _ in range(DROP_ATTEMPTS - 1):
        try:
            detached = await detach_partition(pool, partition, cutoff)
            break
        except errors.LockNotAvailable:
            continue
    else:
        detached = await detach_partition(pool, partition, cutoff)
    if detached is not None:
        await drop_detached(pool, [partition.name])
    return detached


async def detach_partition(pool: Pool, partition: Partition, cutoff: datetime) -> PartitionCount | None:
    """One try at detaching ``partition`` (its events leave the log); None when it must stay."""
    params = {"low": partition.low, "high": partition.high, "cutoff": cutoff}
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(queries.LOCK_EVENT_PARTITIONS)
        row = await one_row(await conn.execute(queries.PARTITION_JOBS, params))
        if row["keeping"]:
            return None
        await conn.execute(queries.PARTITION_DETACH_LOCK_TIMEOUT)
        await conn.execute(sql.SQL(queries.DETACH_EVENT_PARTITION).format(partition=sql.Identifier(partition.name)))
        return PartitionCount(partition, row["jobs"], row["events"], 0)


async def drop_detached(pool: Pool, names: list[str] | None = None) -> list[str]:
    """Drop detached month tables: ``names``, or every one left behind."""
    async with pool.connection() as conn:
        if names is None:
            names = [row["name"] for row in await (await conn.execute(queries.DETACHED_EVENT_PARTITIONS)).fetchall()]
        for name in names:
            await conn.execute(sql.SQL(queries.DROP_DETACHED_PARTITION).format(partition=sql.Identifier(name)))
    return names


async def prune(
    pool: Pool,
    cutoff: datetime,
    *,
    jobs_per_batch: int = JOBS_PER_BATCH,
    events_per_batch: int = EVENTS_PER_BATCH,
) -> AsyncIterator[PruneCount]:
    """Delete, yielding what each step deleted (for a progress display): each
    droppable partition's events at once, then its job rows in batches; then the
    jobs outside partitions, events first in slices of at most
    ``events_per_batch`` rows, then their rows (a job is never left with its row
    gone and events behind)."""
    await drop_detached(pool)
    async with pool.connection() as conn:
        partitions = await attached_partitions(conn)
    for partition in partitions:
        if partition.end > cutoff:
            continue
        dropped = await drop_partition(pool, partition, cutoff)
        if dropped is None:
            continue
        yield PruneCount(0, dropped.events)
        while True:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    queries.PRUNE_PARTITION_JOBS,
                    {"low": partition.low, "high": partition.high, "limit": jobs_per_batch},
                )
            if cur.rowcount == 0:
                break
            yield PruneCount(cur.rowcount, 0)
    bounds = _bounds(partitions)
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(queries.PRUNE_NEXT_JOBS, {"cutoff": cutoff, "limit": jobs_per_batch, **bounds})
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
