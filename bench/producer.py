"""Runstream's side of the stamped runs: a worker process without the agent.

``python -m bench.producer --jobs N --events E --rate R`` creates and claims N
jobs the way a worker does, prints ``{"jobs": [...]}``, waits for a line on
stdin (the bench connects its SSE clients in between), then runs the stamped
schedule of ``bench.stamps`` for each job through the worker's own
``EventWriter`` (group commit → Postgres → NOTIFY), ends each job with its
terminal event, and prints ``{"stopped": [...]}`` (jobs the writer had to stop:
none in a sound run).

It is a separate process, as a worker is, so that neither the clients nor the
API share its event loop or its CPU time slice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from runstream.api.tenancy import DEFAULT_TENANT
from runstream.bench.stamps import stagger, stamp_run
from runstream.core.settings import get_settings
from runstream.db.connector import open_pool
from runstream.db.jobs import Claim, claim_job, create_job
from runstream.db.status import Status
from runstream.tasks.agent_events import COMPLETED
from runstream.tasks.event_writer import EventWriter
from runstream.tasks.runtime import new_loop


async def produce(jobs: int, events: int, rate: float) -> None:
    settings = get_settings()
    assert settings.database_url, "DATABASE_URL is not set"
    pool = await open_pool(
        settings.database_url,
        settings.worker_db_pool_size,
        name="runstream-bench-producer",
    )
    writer = EventWriter(pool)
    stopped: list[str] = []
    claims: list[Claim] = []
    for _ in range(jobs):
        job = await create_job(pool, tenant=DEFAULT_TENANT, message="bench", model="offline")
        claim = await claim_job(
            pool,
            job.id,
            worker="bench-producer",
            stale_after_s=settings.stale_after_s,
        )
        assert claim is not None
        writer.open(
            claim.id,
            attempt=claim.attempt,
            last_seq=claim.job.last_seq,
            stop_run=stopped.append,
        )
        claims.append(claim)
    print(json.dumps({"jobs": [str(c.id) for c in claims]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def run(index: int, claim: Claim) -> None:
        async def emit(payload: dict) -> None:
            await writer.emit(claim.id, payload)

        await stamp_run(emit, events=events, rate=rate, offset=stagger(index, jobs, rate))
        await writer.finish(claim.id, COMPLETED, status=Status.COMPLETED)
        writer.close(claim.id, attempt=claim.attempt)

    await asyncio.gather(*(run(i, claim) for i, claim in enumerate(claims)))
    print(json.dumps({"stopped": stopped}), flush=True)
    await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.producer")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    args = parser.parse_args()
    # On the worker's own kind of loop.
    loop = new_loop()
    try:
        loop.run_until_complete(produce(args.jobs, args.events, args.rate))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
