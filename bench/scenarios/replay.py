"""Replay: one client reads a finished 100,000-event job from ``last_event_id=-1``.

Events/s from the request until the server ends the response. Baseline: the
same number of events replayed from the in-memory recipe's list.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from runstream.api.tenancy import DEFAULT_TENANT
from runstream.bench.context import Bench, target
from runstream.bench.sse_client import open_stream
from runstream.bench.stats import ratio
from runstream.db.connector import open_pool
from runstream.db.events import AppendBatch, append_many
from runstream.db.jobs import claim_job, create_job
from runstream.db.status import Status
from runstream.tasks.agent_events import COMPLETED

SEED_BATCH = 10_000


async def _seed_job(bench: Bench, events: int) -> uuid.UUID:
    """A completed job of ``events`` events: text deltas, then ``done``."""
    pool = await open_pool(bench.database_url, 1, name="runstream-bench-seed")
    try:
        job = await create_job(pool, tenant=DEFAULT_TENANT, message="replay", model="offline")
        claim = await claim_job(pool, job.id, worker="bench-seed", stale_after_s=3600)
        assert claim is not None
        words = events - 1
        for start in range(0, words, SEED_BATCH):
            payloads = [
                {"type": "text_delta", "delta": f"word{i} "} for i in range(start, min(words, start + SEED_BATCH))
            ]
            await append_many(pool, [AppendBatch(claim.id, payloads, attempt=claim.attempt)])
        await append_many(
            pool,
            [AppendBatch(claim.id, [COMPLETED], attempt=claim.attempt, new_status=Status.COMPLETED)],
        )
        return claim.id
    finally:
        await pool.close()


async def _replay(port: int, path: str, events: int) -> float:
    started = time.perf_counter()
    stream = await open_stream("127.0.0.1", port, path, stamped=False)
    await asyncio.wait_for(stream.closed, 120)
    elapsed = time.perf_counter() - started
    if stream.events != events or not stream.in_order:
        raise RuntimeError(f"replay of {path}: {stream.events} of {events} events (in order: {stream.in_order})")
    return events / elapsed


async def _baseline_job(bench: Bench, events: int) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bench.baseline.port}", timeout=30) as http:
        await http.post("/reset")
        job_id = (await http.post("/jobs", json={"events": events - 1, "rate": 0, "offset": 0})).json()["job_id"]
        while (await http.get(f"/jobs/{job_id}")).json()["status"] != "completed":
            await asyncio.sleep(0.1)
        return job_id


async def run(bench: Bench) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events = bench.profile.replay_events
    job_id = await _seed_job(bench, events)
    baseline_id = await _baseline_job(bench, events)
    ours = await _replay(bench.api.http_port, f"/api/jobs/{job_id}/events?last_event_id=-1", events)
    theirs = await _replay(bench.baseline.http_port, f"/jobs/{baseline_id}/events?last_event_id=-1", events)
    scenario = {
        "name": "replay",
        "unit": "events/s",
        "baseline": "in-memory recipe replaying its list",
        "results": [
            {
                "events": events,
                "runstream": {"events_per_s": round(ours)},
                "baseline": {"events_per_s": round(theirs)},
                "ratio": {"events_per_s": ratio(ours, theirs)},
            }
        ],
    }
    return scenario, [
        target(
            "replay",
            f"replay of {events:,} events",
            round(ours),
            "events/s",
            ">=",
            50_000,
        )
    ]
