"""Ingest: events/s appended at 1/8/64/256 concurrent jobs.

Runstream: each job appends as fast as it can through the worker's
``EventWriter`` (group commit, job row lock, one NOTIFY per job per flush).
Baseline, in the same run, on the same Postgres and pool: the same rows by raw
batched INSERT (``queries.RAW_INSERT_EVENTS``, 1,000 rows a statement, the
writer's largest batch per job), no job row, no NOTIFY: the physical limit.

The payload is a ``reasoning`` event: consecutive text deltas would be merged
by the writer, and rows/s would then flatter Runstream.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from runstream.bench import queries
from runstream.bench.context import Bench, target
from runstream.bench.stats import ratio
from runstream.db.connector import Pool, open_pool
from runstream.db.jobs import claim_job, create_job
from runstream.tasks.agent_events import COMPLETED
from runstream.tasks.event_writer import MAX_BUFFERED_EVENTS, EventWriter

PAYLOAD = {
    "type": "reasoning",
    "text": "The user wants a summary; I will read the document first.",
}


async def _new_job(pool: Pool, claimed: bool) -> uuid.UUID:
    job = await create_job(pool, tenant="bench", message="ingest", model="offline")
    if claimed:
        claim = await claim_job(pool, job["id"], worker="bench-ingest", stale_after_s=3600)
        assert claim is not None
    return job["id"]


async def through_writer(pool: Pool, jobs: int, seconds: float) -> float:
    """Events/s of ``jobs`` runs emitting through one worker process's EventWriter."""
    ids = await asyncio.gather(*(_new_job(pool, claimed=True) for _ in range(jobs)))
    writer = EventWriter(pool)
    stopped: list[str] = []
    for job_id in ids:
        writer.open(job_id, attempt=1, last_seq=-1, stop_run=stopped.append)
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds

    async def run(job_id: uuid.UUID) -> int:
        while loop.time() < deadline:
            await writer.emit(job_id, PAYLOAD)
        result = await writer.finish(job_id, COMPLETED, status="completed")
        writer.close(job_id, attempt=1)
        assert result.applied and result.last_seq is not None
        return result.last_seq + 1

    rows = sum(await asyncio.gather(*(run(job_id) for job_id in ids)))
    elapsed = loop.time() - started
    if stopped:
        raise RuntimeError(f"the event writer stopped runs: {stopped}")
    return rows / elapsed


async def raw_insert(pool: Pool, jobs: int, seconds: float) -> float:
    """Events/s of ``jobs`` writers inserting the same rows in raw batches."""
    ids = await asyncio.gather(*(_new_job(pool, claimed=False) for _ in range(jobs)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds

    async def run(job_id: uuid.UUID) -> int:
        written = 0
        while loop.time() < deadline:
            params = {
                "job_id": job_id,
                "first_seq": written,
                "payloads": json.dumps([PAYLOAD] * MAX_BUFFERED_EVENTS, ensure_ascii=False),
            }
            async with pool.connection() as conn:
                await conn.execute(queries.RAW_INSERT_EVENTS, params)
            written += MAX_BUFFERED_EVENTS
        return written

    rows = sum(await asyncio.gather(*(run(job_id) for job_id in ids)))
    return rows / (loop.time() - started)


async def run(bench: Bench) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    settings = bench.settings
    pool = await open_pool(bench.database_url, settings.worker_db_pool_size, name="runstream-bench-ingest")
    try:
        await through_writer(pool, 8, 0.3)  # warm-up
        await raw_insert(pool, 8, 0.3)
        results: list[dict[str, Any]] = []
        for jobs in bench.profile.ingest_jobs:
            ours = await through_writer(pool, jobs, bench.profile.ingest_seconds)
            raw = await raw_insert(pool, jobs, bench.profile.ingest_seconds)
            results.append(
                {
                    "jobs": jobs,
                    "runstream": {"events_per_s": round(ours)},
                    "baseline": {"events_per_s": round(raw)},
                    "ratio": {"events_per_s": ratio(ours, raw)},
                }
            )
    finally:
        await pool.close()
    at_64 = next((row for row in results if row["jobs"] == 64), None)
    value = at_64["ratio"]["events_per_s"] if at_64 else float("nan")
    targets = [
        target("ingest", "ingest at 64 jobs / raw-insert limit", value, "ratio", ">=", 0.70),
        target("ingest", "ingest at 64 jobs / raw-insert limit (scale target)", value, "ratio", ">=", 0.9),
    ]
    scenario = {
        "name": "ingest",
        "unit": "events/s",
        "baseline": f"raw batched INSERT of the same rows ({MAX_BUFFERED_EVENTS}/statement), no NOTIFY, same pool",
        "results": results,
    }
    return scenario, targets
