"""Behind PgBouncer in transaction pooling mode: the API and the worker run every
query through it, the API's live updates come from a direct LISTEN connection or
from polling, and the polling fallback keeps the stream guarantees (no gap, no
duplicate) under concurrent writers."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from runstream.api.hub import EventHub, Subscriber
from runstream.core.settings import Settings
from runstream.db import queries
from runstream.db.connector import open_pool
from runstream.db.events import append_events
from tests.conftest import create_database, drop_database, service_environment
from tests.support.config import services
from tests.support.pgbouncer import PgBouncer, running_pgbouncer
from tests.support.processes import start_api, start_worker
from tests.support.sse import complete_body, frames, read_stream

ASYNC = pytest.mark.asyncio(loop_scope="session")
JOBS = 6


async def watch_transitions(client: httpx.AsyncClient, api_url: str, jobs: list[str], opened: asyncio.Event) -> list:
    """The transitions stream's frames, from its opening until all ``JOBS`` jobs completed."""
    body = ""
    async with client.stream("GET", f"{api_url}/api/jobs/transitions") as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_text():
            opened.set()
            body += chunk
            found = frames(complete_body(body))
            completed = {f.data["job_id"] for f in found if f.data["status"] == "completed"}
            if len(jobs) == JOBS and completed >= set(jobs):
                return found
    raise AssertionError("the transitions stream ended before every job completed")


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[PgBouncer]:
    with running_pgbouncer(services.admin_database_url) as bouncer:
        yield bouncer


@pytest.fixture(scope="module")
def direct_url() -> Iterator[str]:
    url = create_database("rs_pgb")
    yield url
    drop_database(url)


@ASYNC
async def test_api_and_worker_through_pgbouncer_listen_direct_or_poll(
    pgbouncer: PgBouncer, direct_url: str, tmp_path: Path
) -> None:
    queue = f"rs-test-pgb-{uuid.uuid4().hex[:12]}"
    env = {
        **service_environment(pgbouncer.url_for(direct_url), services.redis_url, queue, tmp_path),
        "RUNSTREAM_PREPARED_STATEMENTS": "false",
    }
    worker = start_worker(env, tmp_path, "pgb-worker")
    listening = start_api({**env, "RUNSTREAM_LISTEN_DATABASE_URL": direct_url}, tmp_path, "pgb-api-listen")
    # Keep-alives far apart: the only wake-up left to the polling API's
    # transitions stream is the poll's own.
    polling = start_api(
        {**env, "RUNSTREAM_LIVE_UPDATES": "poll", "RUNSTREAM_POLL_INTERVAL_S": "0.05", "RUNSTREAM_KEEPALIVE_S": "600"},
        tmp_path,
        "pgb-api-poll",
    )
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for api in (listening, polling):
                ready = await client.get(f"{api.url}/readyz")
                assert ready.status_code == 200, ready.text
            # The polling API's transitions stream is woken by the poll too.
            jobs: list[str] = []
            opened = asyncio.Event()
            transitions = asyncio.create_task(watch_transitions(client, polling.url, jobs, opened))
            await asyncio.wait_for(opened.wait(), 30)
            # Many jobs at once: transactions of every process interleave on the
            # bouncer's few server connections.
            for n in range(JOBS):
                created = await client.post(
                    f"{polling.url}/api/jobs", json={"message": f"q{n}", "metadata": {"offline": {"words": 40}}}
                )
                assert created.status_code == 202, created.text
                jobs.append(created.json()["job_id"])
            for job_id in jobs:
                streams = await asyncio.gather(
                    read_stream(client, f"{listening.url}/api/jobs/{job_id}/events"),
                    read_stream(client, f"{polling.url}/api/jobs/{job_id}/events"),
                )
                first, second = (complete_body(body) for body in streams)
                assert first == second
                ids = [frame.id for frame in frames(first)]
                assert ids == list(range(len(ids))) and frames(first)[-1].data == {
                    "type": "done",
                    "status": "completed",
                }
                # Resume on the polling one, from the middle.
                middle = len(ids) // 2
                resumed = await read_stream(
                    client, f"{polling.url}/api/jobs/{job_id}/events", headers={"Last-Event-ID": str(middle)}
                )
                assert frames(resumed) == frames(first)[middle + 1 :]
            moves = await asyncio.wait_for(transitions, 60)
            for job_id in jobs:
                assert [
                    (f.data["previous_status"], f.data["status"], f.data["attempt"])
                    for f in moves
                    if f.data["job_id"] == job_id
                ] == [(None, "pending", 0), ("pending", "running", 1), ("running", "completed", 1)]
            assert [f.id for f in moves] == sorted({f.id for f in moves})
        # Every query went through the bouncer; only the LISTEN connection went direct.
        clients = set(pgbouncer.clients(make_url(direct_url).database))
        assert {"runstream-worker", f"runstream-api-{listening.pid}", f"runstream-api-{polling.pid}"} <= clients
        assert not any(name.endswith("-listen") for name in clients)
        async with await open_pool(direct_url, 1, name="pgb-check") as check, check.connection() as conn:
            cur = await conn.execute("SELECT application_name FROM pg_stat_activity WHERE datname = current_database()")
            direct = {row["application_name"] for row in await cur.fetchall()}
        assert f"runstream-api-{listening.pid}-listen" in direct
        assert f"runstream-api-{polling.pid}-listen" not in direct
    finally:
        for process in (polling, listening, worker):
            process.stop()


async def run_across_server_connections(pool: AsyncConnectionPool) -> None:
    """One client connection runs a query often enough for psycopg to prepare it,
    then runs it again while another client holds the server connection it used."""
    async with pool.connection() as first:
        for _ in range(8):
            await first.execute(queries.PING)
        async with pool.connection() as second, second.transaction():
            await second.execute(queries.PING)
            await first.execute(queries.PING)


@ASYNC
async def test_nothing_is_prepared_on_the_server_when_told(pgbouncer: PgBouncer, direct_url: str) -> None:
    url = pgbouncer.url_for(direct_url)
    # The bouncer is in transaction mode: a prepared statement does not follow its client.
    async with await open_pool(url, 2, name="prepared") as pool:
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            await run_across_server_connections(pool)
    async with await open_pool(url, 2, name="unprepared", prepared_statements=False) as pool:
        await run_across_server_connections(pool)


WRITERS_PER_JOB = 3
BATCHES_PER_WRITER = 40
SUBSCRIBERS_PER_JOB = 6


@ASYNC
async def test_polling_fallback_no_gap_no_duplicate_under_concurrent_writers(
    pgbouncer: PgBouncer, direct_url: str
) -> None:
    url = pgbouncer.url_for(direct_url)
    settings = Settings(
        DATABASE_URL=url, live_updates="poll", poll_interval_s=0.02, replay_page_size=7, stream_buffer_rows=50
    )
    pool = await open_pool(url, 4, name="poll-test", prepared_statements=False)
    hub = EventHub(settings, pool, application_name="poll-test")
    seed = 7
    rng = random.Random(seed)
    # The whole workload is drawn first, so the seed alone decides it: each writer's
    # batch sizes, and each subscriber's start and how many of its job's appends it
    # joins after (at most a third: all join while the writers still write).
    plans = {
        uuid.uuid4(): [[rng.randint(1, 6) for _ in range(BATCHES_PER_WRITER)] for _ in range(WRITERS_PER_JOB)]
        for _ in range(4)
    }
    joins = {
        job_id: [(rng.randint(-1, 30), rng.randint(0, 40)) for _ in range(SUBSCRIBERS_PER_JOB)] for job_id in plans
    }
    totals = {job_id: sum(map(sum, plan)) for job_id, plan in plans.items()}
    # appended[job_id][n]: set once n + 1 appends to the job (by any of its writers) have committed.
    appended = {job_id: [asyncio.Event() for _ in range(WRITERS_PER_JOB * BATCHES_PER_WRITER)] for job_id in plans}
    try:
        async with pool.connection() as conn:
            for job_id in plans:
                await conn.execute(
                    "INSERT INTO jobs (id, message, model, status, attempt) VALUES (%s, 'x', 'offline', 'running', 1)",
                    (job_id,),
                )
        await hub.start()

        async def write(job_id: uuid.UUID, sizes: list[int]) -> None:
            for size in sizes:
                result = await append_events(pool, job_id, [{"type": "text_delta", "delta": "x"}] * size)
                assert result.applied
                next(event for event in appended[job_id] if not event.is_set()).set()

        async def follow(job_id: uuid.UUID, after: int, join_after: int) -> list[int]:
            await appended[job_id][join_after].wait()
            seen: list[int] = []
            with hub.subscribe(job_id, after) as subscriber:
                while not seen or seen[-1] < totals[job_id] - 1:
                    seen += [frame.seq for frame in await next_batch(subscriber)]
            return seen

        followers = [
            (job_id, after, join_after, asyncio.create_task(follow(job_id, after, join_after)))
            for job_id, subscribers in joins.items()
            for after, join_after in subscribers
        ]
        await asyncio.gather(*(write(job_id, sizes) for job_id, plan in plans.items() for sizes in plan))
        for job_id, after, join_after, task in followers:
            seen = await asyncio.wait_for(task, 60)
            assert seen == list(range(after + 1, totals[job_id])), (job_id, after, join_after, f"seed {seed}")
    finally:
        await hub.stop()
        await pool.close()


async def next_batch(subscriber: Subscriber) -> list:
    return await asyncio.wait_for(subscriber.next_batch(), 30)
