"""Postgres restarted under running jobs and open streams; the broker stopped with
jobs queued and started again empty. Both are throwaway instances of the test's own."""

from __future__ import annotations

import asyncio
import time

import httpx
import psycopg
import pytest

from runstream.bench.private_services import ThrowawayPostgres, ThrowawayRedis
from runstream.db.migrate import upgrade_to_head
from tests.conftest import create_database, drop_database
from tests.faults.support import (
    await_condition,
    fault_env,
    follow,
    job_row,
    logged_events,
    submit,
    text_of,
)
from tests.support.config import services
from tests.support.processes import start_api, start_worker

pytestmark = pytest.mark.faults

WORDS = 300  # about 3 s of streaming


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

            await await_condition(mid_run, 20, "every job mid-run", interval=0.02)
            # A crash and a restart: every connection of the API and the worker is cut.
            await asyncio.to_thread(postgres.stop, "immediate")
            await asyncio.sleep(1.0)
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

            await await_condition(both_running, 20, "two runs taking both slots")
            queued = [await submit(client, f"queued {i}", words=5) for i in range(3)]
            await asyncio.sleep(0.3)
            assert [(await job_row(conn, job_id))["status"] for job_id in queued] == ["pending"] * 3

            broker.kill()  # it keeps nothing on disk: the queued messages are gone
            started = time.monotonic()
            while_down = [await submit(client, f"while down {i}", words=5) for i in range(2)]
            assert [(await job_row(conn, job_id))["status"] for job_id in while_down] == ["pending"] * 2
            assert time.monotonic() - started < 6, "a dispatch to a dead broker must give up quickly"
            broker.start()

            async def all_finished():
                rows = [await job_row(conn, job_id) for job_id in [*running, *queued, *while_down]]
                return rows if all(r["status"] in ("completed", "failed", "cancelled") for r in rows) else None

            rows = await await_condition(all_finished, 60, "every job finished", interval=0.2)
            assert [(r["status"], r["attempt"]) for r in rows] == [("completed", 1)] * 7
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
            await asyncio.sleep(1.5)

            async def timed_status() -> tuple[httpx.Response, float]:
                started = time.monotonic()
                response = await client.get(f"/api/jobs/{job_id}")
                return response, time.monotonic() - started

            await asyncio.to_thread(postgres.stop, "immediate")
            await asyncio.sleep(1.0)
            await asyncio.to_thread(postgres.start)
            # Postgres is back: the dead connections are dropped together and the
            # first request is served by a new one, not after walking them all.
            response, took = await timed_status()
            assert response.status_code == 200, response.text
            assert took < 10, f"the first request after a restart took {took:.1f}s"

            # While it is down: a 503 within the bounded wait, then service once it is back.
            await asyncio.sleep(1.5)
            await asyncio.to_thread(postgres.stop, "immediate")
            response, took = await timed_status()
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "database_unavailable"
            assert response.headers["Retry-After"] == "1"
            assert took < 10, f"a request during the outage took {took:.1f}s"
            await asyncio.to_thread(postgres.start)
            statuses = []
            for _ in range(10):
                response, took = await timed_status()
                assert took < 10, f"a request after the outage took {took:.1f}s"
                statuses.append(response.status_code)
                if response.status_code == 200:
                    break
                assert response.status_code == 503, response.text
                await asyncio.sleep(1)
            assert statuses[-1] == 200, statuses
            assert response.json()["status"] == "pending"
    finally:
        if api is not None:
            api.kill()
        postgres.remove()
