"""Retention: drop a month of events (one partition) against the batched delete.

Seeds a month's partition (long past) with ``retention_events`` events of
finished jobs, and the default partition with ``retention_batched_events``
events of finished jobs from before partitioning, both with generate_series,
then times ``runstream prune``'s own steps (db.retention) over them: the
partition's detach, then its table's drop (together: the figure), then the
month's job rows, then the batched delete of the rest. The batched delete is measured on fewer events
(it is slow: that is the point) and its time for the month's events is
extrapolated from its rate, and reported as such.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from runstream.bench import queries
from runstream.bench.context import Bench, target
from runstream.bench.stats import ratio
from runstream.db.connector import open_pool
from runstream.db.partitions import Partition, ensure_partitions
from runstream.db.retention import detach_partition, drop_detached, prune

EVENTS_PER_JOB = 100
MONTH = Partition.of_month(datetime(2001, 1, 15, tzinfo=UTC))
OUTSIDE_LOW, OUTSIDE_HIGH = "f0000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"


async def _seed(database_url: str, month_events: int, old_events: int) -> float:
    started = time.perf_counter()
    pool = await open_pool(database_url, 1, name="runstream-bench-retention-seed")
    try:
        await ensure_partitions(pool, MONTH.start, ahead=0)
        async with pool.connection() as conn:
            await conn.execute(queries.BENCH_SEED_FAST_COMMIT)
            jobs = month_events // EVENTS_PER_JOB
            month_ms = int((MONTH.end - MONTH.start).total_seconds() * 1000)
            await conn.execute(queries.BENCH_SEED_MONTH_JOBS, {
                "jobs": jobs, "per_job": EVENTS_PER_JOB,
                "start_ms": int(MONTH.start.timestamp() * 1000), "step_ms": max(1, month_ms // jobs),
            })  # fmt: skip
            await conn.execute(queries.BENCH_SEED_OLD_JOBS, {
                "jobs": old_events // EVENTS_PER_JOB, "per_job": EVENTS_PER_JOB,
                "finished_at": datetime.now(UTC) - timedelta(days=400),
            })  # fmt: skip
            for low, high in ((MONTH.low, MONTH.high), (OUTSIDE_LOW, OUTSIDE_HIGH)):
                await conn.execute(queries.BENCH_SEED_EVENTS, {"per_job": EVENTS_PER_JOB, "low": low, "high": high})
    finally:
        await pool.close()
    return time.perf_counter() - started


async def run(bench: Bench) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    profile = bench.profile
    seed_s = await _seed(bench.database_url, profile.retention_events, profile.retention_batched_events)
    pool = await open_pool(bench.database_url, 1, name="runstream-bench-retention")
    cutoff = datetime.now(UTC) - timedelta(days=365)
    job_rows_s = batched_s = 0.0
    batched = 0
    try:
        started = time.perf_counter()
        detached = await detach_partition(pool, MONTH, cutoff)
        detach_s = time.perf_counter() - started
        await drop_detached(pool, [MONTH.name])
        drop_s = time.perf_counter() - started
        dropped = detached.events if detached else 0
        mark = time.perf_counter()
        # What is left: the month's job rows, then the batched delete outside partitions.
        async for step in prune(pool, cutoff):
            now = time.perf_counter()
            if step.events == 0 and not batched:
                job_rows_s += now - mark
            else:
                batched_s += now - mark
                batched += step.events
            mark = now
    finally:
        await pool.close()
    batched_rate = batched / batched_s if batched_s else float("nan")
    drop_rate = dropped / drop_s if drop_s else float("nan")
    batched_for_month_s = dropped / batched_rate if batched_rate else float("nan")
    result = {
        "events": dropped,
        "seed_seconds": round(seed_s, 1),
        "runstream": {
            "seconds": drop_s,
            "detach_seconds": detach_s,
            "events_per_s": drop_rate,
            "job_rows_seconds": job_rows_s,
        },
        "baseline": {
            "seconds": batched_s,
            "events": batched,
            "events_per_s": batched_rate,
            "seconds_for_month_events": batched_for_month_s,
        },
        "ratio": {"events_per_s": ratio(drop_rate, batched_rate)},
    }
    note = (
        f"of which the detach (the only step that locks job_events) {detach_s:.3g} s; "
        f"batched delete in this run: {batched:,} events in {batched_s:.3g} s ({batched_rate:,.0f} events/s), "
        f"so {dropped:,} events would take about {batched_for_month_s:,.0f} s; the month's {dropped // EVENTS_PER_JOB:,} "
        f"job rows took {job_rows_s:.3g} s more, in batches"
    )
    targets = [target("retention", f"retention: drop a month of {dropped:,} events", drop_s, "s", "<=", 1.0, note=note)]
    scenario = {
        "name": "retention",
        "unit": "s",
        "baseline": "the batched delete (5,000-event slices) of events outside partitions, same run",
        "results": [result],
    }
    return scenario, targets
