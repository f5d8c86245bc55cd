"""Postgres restarted under running jobs and open streams; the broker stopped with
jobs queued and started again empty. Both are throwaway instances of the test's own."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest
import redis

from runstream.bench.private_services import ThrowawayPostgres, ThrowawayRedis
from runstream.core.broker import TASK_NAME
from runstream.db.connector import CHECK_IDLE_AFTER_S
from runstream.db.migrate import upgrade_to_head
from tests.conftest import create_database, drop_database
from tests.faults.support import (
    fault_env,
    follow,
    job_row,
    logged_events,
    submit,
    text_of,
)
from tests.support.config import services
from tests.support.processes import start_api, start_worker
from tests.support.waiting import eventually

pytestmark = pytest.mark.faults

WORDS = 300  # about 3 s of streaming
# What the API's hub and the worker's event writer log when Postgres does not answer.
LISTEN_FAILED = "LISTEN connection failed"
FLUSH_FAILED = "event flush of"


async def pool_idle(database_url: str, api_pid: int) -> bool:
    """Every connection of the API's pool idle for long enough that its next
    checkout checks it first (seen from the server, which marks it idle a moment
    before the pool does: the wait for Postgres to restart covers the difference)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'idle'"
            " AND state_change < clock_timestamp() - make_interval(secs => %s)), count(*)"
            " FROM pg_stat_activity WHERE application_name = %s",
            [CHECK_IDLE_AFTER_S, f"runstream-api-{api_pid}"],
        )
        idle, total = await cur.fetchone()
    return total > 0 and idle == total


async def test_postgres_restart_mid_run(tmp_path, log_dir):
    postgres = ThrowawayPostgres()
    postgres.start()
    worker = api = None
    try:
        database_url = postgres.create_database("runstream")
        upgrade_to_head(database_url)
        env = fault_env(database_url, services.redis_url, tmp_path)
        worker = start_worker(env, log_dir, "pg-restart-worker")
        api = start_api(env, log_dir, "pg-restart-api")
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            reference = await follow(client, await submit(client, "restart me", words=WORDS), reconnect=False)
            ids = [await submit(client, "restart me", words=WORDS) for _ in range(3)]
            readers = [asyncio.create_task(follow(client, job_id, reconnect=True, timeout=90)) for job_id in ids]

            async def mid_run():
                async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                    return all([(await job_row(conn, job_id))["last_seq"] >= 20 for job_id in ids])

            await eventually(mid_run, timeout=20, interval=0.02, what="every job mid-run")
            # A crash and a restart: every connection of the API and the worker is cut,
            # and Postgres stays down until both have failed to reach it again.
            await asyncio.to_thread(postgres.stop, "immediate")
            await eventually(
                lambda: LISTEN_FAILED in api.log() and FLUSH_FAILED in worker.log(),
                what="the API and the worker failing to reach Postgres while it is down",
            )
            await asyncio.to_thread(postgres.start)

            streams = await asyncio.wait_for(asyncio.gather(*readers), 90)
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                for job_id, stream in zip(ids, streams, strict=True):
                    job = await job_row(conn, job_id)
                    logged = [payload for _, _, payload in await logged_events(conn, job_id)]
                    # The client saw every committed event once, in order, whatever it took.
                    assert stream.seqs == list(range(job["last_seq"] + 1)), stream.seqs
                    assert stream.payloads == logged
                    assert job["status"] == "completed", job
                    assert logged[-1] == {"type": "done", "status": "completed"}
                    assert text_of(logged) == text_of(reference.payloads)
                    retries = [p for p in logged if p["type"] == "retry"]
                    assert [r["attempt"] for r in retries] == list(range(2, job["attempt"] + 1))
            # The API's pool serves requests again, and a new job runs end to end.
            assert (await client.get(f"/api/jobs/{ids[0]}")).json()["status"] == "completed"
            after = await follow(client, await submit(client, "after the restart", words=5), reconnect=False)
            assert after.payloads[-1] == {"type": "done", "status": "completed"}
    finally:
        for process in (api, worker):
            if process is not None:
                process.kill()
        postgres.remove()


async def test_broker_stopped_with_jobs_queued_then_started_empty(tmp_path, log_dir):
    broker = ThrowawayRedis()
    broker.start()
    database_url = create_database("rs_fault")
    worker = api = None
    try:
        # Two runs at a time: the rest wait in the broker's queue.
        env = fault_env(database_url, broker.url, tmp_path, RUNSTREAM_WORKER_CONCURRENCY="2")
        worker = start_worker(env, log_dir, "broker-worker")
        api = start_api(env, log_dir, "broker-api")
        async with (
            httpx.AsyncClient(base_url=api.url, timeout=30) as client,
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn,
        ):
            running = [await submit(client, "busy", tool_sleep_s=2) for _ in range(2)]

            async def both_running():
                return all([(await job_row(conn, job_id))["status"] == "running" for job_id in running])

            await eventually(both_running, timeout=20, what="two runs taking both slots")
            queued = [await submit(client, f"queued {i}", words=5) for i in range(3)]
            # Their messages wait in the broker's queue (the worker takes no more than its two slots).
            with redis.Redis.from_url(broker.url) as broker_client:
                assert broker_client.llen(env["RUNSTREAM_QUEUE"]) == 3
            assert [(await job_row(conn, job_id))["status"] for job_id in queued] == ["pending"] * 3

            broker.kill()  # it keeps nothing on disk: the queued messages are gone
            # Each POST gives up on the dead broker (within the client's timeout) and answers
            # 202 all the same: the job stays pending for the reaper.
            while_down = [await submit(client, f"while down {i}", words=5) for i in range(2)]
            assert [(await job_row(conn, job_id))["status"] for job_id in while_down] == ["pending"] * 2
            for job_id in while_down:
                assert f"dispatch of {TASK_NAME} {job_id} failed, it stays pending for the reaper" in api.log()
            broker.start()

            async def all_finished():
                rows = [await job_row(conn, job_id) for job_id in [*running, *queued, *while_down]]
                return rows if all(r["status"] in ("completed", "failed", "cancelled") for r in rows) else None

            rows = await eventually(all_finished, timeout=60, interval=0.2, what="every job finished")
            assert [(r["status"], r["attempt"]) for r in rows] == [("completed", 1)] * 7
            # The jobs whose messages were lost ran because the reaper sent them again.
            redispatched = [line for line in worker.log().splitlines() if "reaper: dispatched" in line]
            for job_id in [*queued, *while_down]:
                assert any(str(job_id) in line for line in redispatched), (job_id, redispatched)
            for job_id in [*queued, *while_down]:
                payloads = [p for _, _, p in await logged_events(conn, job_id)]
                assert (payloads[0]["type"], payloads[-1]) == ("reasoning", {"type": "done", "status": "completed"})
                assert not any(p["type"] == "retry" for p in payloads)
    finally:
        for process in (api, worker):
            if process is not None:
                process.kill()
        broker.remove()
        drop_database(database_url)


async def test_api_requests_after_a_postgres_restart_are_served_at_once_and_503_while_it_is_down(tmp_path, log_dir):
    postgres = ThrowawayPostgres()
    postgres.start()
    api = None
    try:
        database_url = postgres.create_database("runstream")
        upgrade_to_head(database_url)
        # No worker: the job stays pending, which is all a status request needs.
        env = fault_env(database_url, services.redis_url, tmp_path, RUNSTREAM_API_DB_WAIT_S="2")
        api = start_api(env, log_dir, "pg-recovery-api")
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
            job_id = await submit(client, "status me")
            # Every pooled connection busy at once, then idle long enough to be checked.
            await asyncio.gather(*[client.get(f"/api/jobs/{job_id}") for _ in range(16)])
            await eventually(lambda: pool_idle(database_url, api.pid), what="the API's pool idle, due for checks")

            await asyncio.to_thread(postgres.stop, "immediate")
            await eventually(lambda: LISTEN_FAILED in api.log(), what="the API failing to reach Postgres")
            await asyncio.to_thread(postgres.start)
            # Postgres is back: the dead connections are dropped together and the first
            # request is served by a new one within the API's 2 s wait for a connection
            # (past it, the answer would be a 503).
            response = await client.get(f"/api/jobs/{job_id}")
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "pending"

            # While it is down: a 503 at the end of the bounded wait, then service once it is back.
            await eventually(lambda: pool_idle(database_url, api.pid), what="the API's pool idle, due for checks")
            await asyncio.to_thread(postgres.stop, "immediate")
            response = await client.get(f"/api/jobs/{job_id}")
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "database_unavailable"
            assert response.headers["Retry-After"] == "1"
            await asyncio.to_thread(postgres.start)

            async def served() -> httpx.Response | None:
                response = await client.get(f"/api/jobs/{job_id}")
                assert response.status_code in (200, 503), response.text
                return response if response.status_code == 200 else None

            # Asked again as often as its Retry-After says.
            response = await eventually(served, interval=1.0, what="the API serving again after the outage")
            assert response.json()["status"] == "pending"
            # The outage was answered and logged as such, never as a stack trace.
            assert f"database unavailable during GET /api/jobs/{job_id}" in api.log()
            assert "Traceback" not in api.log()
    finally:
        if api is not None:
            api.kill()
        postgres.remove()
