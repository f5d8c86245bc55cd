"""The job row is the truth: the reaper, duplicate deliveries, warm shutdown of a
worker, and a commit whose outcome the writer could not see."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from celery import Celery

from runstream.core.broker import TASK_NAME, celery_config
from runstream.core.settings import Settings
from runstream.db import queries
from runstream.db.connector import open_pool
from runstream.db.jobs import (
    SHUTDOWN_ERROR,
    ReapLimits,
    cancel_job,
    claim_job,
    create_job,
    finish_stuck,
    get_job,
    mark_stuck_for_dispatch,
    release_job,
)
from runstream.tasks.event_writer import EventWriter
from tests.conftest import create_database, drop_database
from tests.faults.support import (
    fault_env,
    follow,
    job_row,
    logged_events,
    spawn_worker,
    submit,
    text_of,
    worker_ready,
)
from tests.support.config import services
from tests.support.processes import free_port, start_api, start_worker
from tests.support.waiting import eventually, wait_until

pytestmark = pytest.mark.faults

TENANT = "default"
FINISHED = ("completed", "failed", "cancelled")


def sender(env: dict[str, str]) -> Celery:
    """Publishes as the API does, to the queue ``env`` names."""
    settings = Settings(
        CELERY_BROKER_URL=env["CELERY_BROKER_URL"],
        queue=env["RUNSTREAM_QUEUE"],
        data_dir=Path(env["RUNSTREAM_DATA_DIR"]),
    )
    app = Celery("runstream-fault-tests", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


@pytest.fixture(scope="module")
async def pool(fault_database):
    pool = await open_pool(fault_database, 4, name="rs-fault-tests")
    yield pool
    await pool.close()


async def finished(db, job_id, timeout=30.0):
    async def done():
        job = await job_row(db, job_id)
        return job if job["status"] in FINISHED else None

    return await eventually(done, timeout=timeout, what=f"job {job_id} finished")


# --- the reaper ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reaper_env(fault_database, tmp_path_factory):
    # Two attempts, and a long backoff (2-4 s) to tell a due retry from an early one.
    return fault_env(
        fault_database,
        services.redis_url,
        tmp_path_factory.mktemp("reaper"),
        RUNSTREAM_MAX_ATTEMPTS="2",
        RUNSTREAM_RETRY_BACKOFF_S="4",
        RUNSTREAM_PENDING_TIMEOUT_S="0.5",
    )


@pytest.fixture(scope="module")
def reaper_worker(reaper_env, log_dir):
    process = start_worker(reaper_env, log_dir, "reaper-worker")
    yield process
    process.stop()


async def test_a_job_never_dispatched_is_dispatched_by_the_reaper(pool, db, reaper_worker):
    # The API committed the job and died before publishing it: no message exists.
    job = await create_job(pool, tenant=TENANT, message="hi", model="offline", metadata={"offline": {"words": 4}})
    done = await finished(db, job.id, timeout=15)
    assert (done["status"], done["attempt"]) == ("completed", 1)
    assert [p["type"] for _, _, p in await logged_events(db, job.id)][-1] == "done"


async def test_a_dead_run_out_of_attempts_fails_with_an_error_event(pool, db, reaper_worker):
    job = await create_job(pool, tenant=TENANT, message="hi", model="offline")
    # Two attempts claimed by workers that then died (no heartbeat ever after).
    assert await claim_job(pool, job.id, worker="dead-1", stale_after_s=0)
    assert (await claim_job(pool, job.id, worker="dead-2", stale_after_s=0)).attempt == 2
    done = await finished(db, job.id, timeout=15)
    message = "gave up after 2 attempts: worker lost"
    assert (done["status"], done["attempt"], done["error"]) == ("failed", 2, message)
    assert [p for _, _, p in await logged_events(db, job.id)] == [{"type": "error", "message": message}]


async def test_a_dead_run_asked_to_cancel_is_cancelled_by_the_reaper(pool, db, reaper_worker):
    job = await create_job(pool, tenant=TENANT, message="hi", model="offline")
    assert await claim_job(pool, job.id, worker="dead", stale_after_s=0)
    assert await cancel_job(pool, job.id, TENANT) == "running"
    done = await finished(db, job.id, timeout=15)
    assert (done["status"], done["attempt"]) == ("cancelled", 1)
    assert [p for _, _, p in await logged_events(db, job.id)] == [{"type": "done", "status": "cancelled"}]


async def test_a_dead_run_asked_to_cancel_is_ended_never_run_again():
    # Both reaper statements see such a job the moment its heartbeat goes stale. A tick
    # whose first statement ran just before that moment and its second just after would
    # run it again (attempt 2) instead of ending it: the dispatch must leave it alone,
    # and so must a claim by a late delivery of its message.
    url = create_database("rs_reap")
    try:
        pool = await open_pool(url, 2, name="rs-reap-test")
        try:
            limits = ReapLimits(pending_timeout_s=3600, stale_after_s=0, max_attempts=2)
            job = await create_job(pool, tenant=TENANT, message="hi", model="offline")
            assert await claim_job(pool, job.id, worker="dead", stale_after_s=0)
            assert await cancel_job(pool, job.id, TENANT) == "running"
            assert await mark_stuck_for_dispatch(pool, limits) == []
            assert await claim_job(pool, job.id, worker="late", stale_after_s=0) is None
            assert await finish_stuck(pool, limits) == [(job.id, "cancelled")]
        finally:
            await pool.close()
    finally:
        drop_database(url)


async def test_a_hand_back_on_shutdown_does_not_use_up_the_last_attempt():
    # Both released on their only attempt: the one a transient failure released is
    # out of attempts and failed; the one a shutdown released is dispatched and
    # claimed again. A database of its own: no other reaper may act meanwhile.
    url = create_database("rs_reap")
    try:
        pool = await open_pool(url, 2, name="rs-reap-test")
        try:
            limits = ReapLimits(pending_timeout_s=0, stale_after_s=3600, max_attempts=1)
            failed, handed_back = [
                await create_job(pool, tenant=TENANT, message="hi", model="offline") for _ in range(2)
            ]
            for job, error, handback in ((failed, "model overloaded", False), (handed_back, SHUTDOWN_ERROR, True)):
                assert await claim_job(pool, job.id, worker="w", stale_after_s=3600, max_attempts=1)
                assert await release_job(pool, job.id, attempt=1, error=error, handback=handback)
            assert await finish_stuck(pool, limits) == [(failed.id, "failed")]
            assert await mark_stuck_for_dispatch(pool, limits) == [handed_back.id]
            claim = await claim_job(pool, handed_back.id, worker="next", stale_after_s=3600, max_attempts=1)
            assert claim is not None and claim.attempt == 2
            assert (claim.previous_status, claim.previous_error) == ("pending", SHUTDOWN_ERROR)
        finally:
            await pool.close()
    finally:
        drop_database(url)


async def test_hand_backs_on_shutdown_never_cost_a_failing_attempt():
    # Handed back twice, then failing: still max_attempts (2) failing attempts, by
    # the claim, the reaper and a run's last-attempt check (counted_attempts) alike.
    url = create_database("rs_reap")
    try:
        pool = await open_pool(url, 2, name="rs-reap-test")
        try:
            limits = ReapLimits(pending_timeout_s=0, stale_after_s=3600, max_attempts=2)
            job = await create_job(pool, tenant=TENANT, message="hi", model="offline")
            releases = [(SHUTDOWN_ERROR, True), (SHUTDOWN_ERROR, True), ("model overloaded", False)]
            for attempt, (error, handback) in enumerate(releases, start=1):
                claim = await claim_job(pool, job.id, worker="w", stale_after_s=3600, max_attempts=2)
                assert claim is not None and claim.attempt == attempt
                assert await release_job(pool, job.id, attempt=attempt, error=error, handback=handback)
            # One failure so far: the reaper dispatches it rather than failing it.
            assert await finish_stuck(pool, limits) == []
            assert await mark_stuck_for_dispatch(pool, limits) == [job.id]
            claim = await claim_job(pool, job.id, worker="w", stale_after_s=3600, max_attempts=2)
            assert claim is not None and (claim.attempt, claim.counted_attempts) == (4, 2)
            assert (claim.previous_status, claim.previous_error) == ("pending", "model overloaded")
            assert await release_job(pool, job.id, attempt=4, error="model overloaded")
            # Two failures: no third claim, and the reaper ends it.
            assert await claim_job(pool, job.id, worker="w", stale_after_s=3600, max_attempts=2) is None
            assert await mark_stuck_for_dispatch(pool, limits) == []
            assert await finish_stuck(pool, limits) == [(job.id, "failed")]
            row = await get_job(pool, job.id, TENANT)
            assert (row.attempt, row.error) == (4, "gave up after 4 attempts: model overloaded")
        finally:
            await pool.close()
    finally:
        drop_database(url)


async def test_a_retry_waiting_out_its_backoff_is_not_dispatched_early(pool, db, reaper_env, reaper_worker):
    job = await create_job(
        pool, tenant=TENANT, message="hi", model="offline", metadata={"offline": {"fail_attempts": 1, "words": 4}}
    )
    sender(reaper_env).send_task(TASK_NAME, args=[str(job.id)], task_id=str(job.id))

    async def released():
        row = await job_row(db, job.id)
        return row if row["status"] == "pending" and row["attempt"] == 1 and row["error"] else None

    row = await eventually(released, timeout=15, interval=0.01, what="attempt 1 released")
    cur = await db.execute("SELECT now()")
    [released_at] = await cur.fetchone()
    # The backoff: 4 s scaled by a jitter factor in [0.5, 1).
    assert 1.9 <= (row["available_at"] - released_at).total_seconds() <= 4.1
    done = await finished(db, job.id, timeout=15)
    assert (done["status"], done["attempt"]) == ("completed", 2)
    cur = await db.execute("SELECT created_at FROM job_events WHERE job_id = %s AND type = 'retry'", [job.id])
    [[retried_at]] = await cur.fetchall()
    # The reaper (0.5 s pending timeout, 0.3 s interval) would have sent it 1 s after the release.
    assert retried_at >= row["available_at"]


# --- duplicate deliveries ------------------------------------------------------------------


async def test_concurrent_claims_of_one_job_let_exactly_one_through(fault_database, pool, db):
    connections = [await psycopg.AsyncConnection.connect(fault_database, autocommit=True) for _ in range(16)]
    try:
        for stale in (False, True):
            job = await create_job(pool, tenant=TENANT, message="hi", model="offline")
            if stale:  # a dead run: its heartbeat is a minute old
                assert await claim_job(pool, job.id, worker="dead", stale_after_s=0)
                await db.execute("UPDATE jobs SET heartbeat_at = now() - interval '1 minute' WHERE id = %s", [job.id])
            # Each claim on a connection of its own, all at once.
            claims = await asyncio.gather(*(_claim_on(conn, job.id, f"w{i}") for i, conn in enumerate(connections)))
            winners = [c for c in claims if c is not None]
            assert winners == [(job.id, 2 if stale else 1)], (stale, claims)
    finally:
        for conn in connections:
            await conn.close()


async def _claim_on(conn: psycopg.AsyncConnection, job_id: uuid.UUID, worker: str):
    cur = await conn.execute(
        queries.CLAIM_JOB,
        {"id": job_id, "worker": worker, "stale_after_s": 30, "max_attempts": None},
    )
    row = await cur.fetchone()
    return None if row is None else (row[0], row[6])  # id, attempt


async def test_two_workers_receive_the_same_job_at_once(pool, db, fault_database, tmp_path, log_dir):
    # Each worker consumes a queue of its own, and the job is sent to both: each
    # is sure to receive it, at the same moment.
    envs = [fault_env(fault_database, services.redis_url, tmp_path / str(i)) for i in range(2)]
    workers = [spawn_worker(env, log_dir, f"dup-{i}") for i, env in enumerate(envs)]
    try:
        for worker in workers:
            wait_until(lambda w=worker: worker_ready(w), timeout=60, what=f"{worker.name} ready")
        job = await create_job(
            pool, tenant=TENANT, message="hi", model="offline", metadata={"offline": {"tool_sleep_s": 1}}
        )
        senders = [sender(env) for env in envs]
        await asyncio.gather(
            *(asyncio.to_thread(s.send_task, TASK_NAME, args=[str(job.id)], task_id=str(job.id)) for s in senders)
        )
        done = await finished(db, job.id)
        assert (done["status"], done["attempt"]) == ("completed", 1)
        payloads = [p for _, _, p in await logged_events(db, job.id)]
        assert [p["type"] for p in payloads if p["type"] != "text_delta"] == [
            "reasoning",
            "tool_call",
            "tool_result",
            "reasoning",
            "done",
        ]
        logs = [w.log() for w in workers]
        ran = [f"job {job.id}: running" in log for log in logs]
        stepped_aside = [f"job {job.id}: skipped" in log for log in logs]
        assert sorted(ran) == [False, True] and [not r for r in ran] == stepped_aside
    finally:
        for worker in workers:
            worker.stop()


# --- warm shutdown -------------------------------------------------------------------------


async def test_sigterm_to_a_worker_hands_its_run_to_another_at_once(fault_database, db, tmp_path, log_dir):
    # No help from the reaper here: it would take a minute to notice anything.
    env = fault_env(
        fault_database, services.redis_url, tmp_path, RUNSTREAM_STALE_AFTER_S="60", RUNSTREAM_PENDING_TIMEOUT_S="60"
    )
    workers = {slot: spawn_worker(env, log_dir, f"term-{slot}") for slot in ("a", "b")}
    api = start_api(env, log_dir, "term-api")
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            for worker in workers.values():
                wait_until(lambda w=worker: worker_ready(w), timeout=60, what=f"{worker.name} ready")
            reference = await follow(client, await submit(client, "a long answer", words=300), reconnect=False)
            job_id = await submit(client, "a long answer", words=300)
            reader = asyncio.create_task(follow(client, job_id, reconnect=False))

            async def mid_run():
                job = await job_row(db, job_id)
                return job if job["status"] == "running" and job["last_seq"] >= 20 else None

            job = await eventually(mid_run, timeout=20, interval=0.01, what="mid-run")
            [slot] = [s for s, w in workers.items() if job["worker"].startswith(f"{w.name}@")]
            [other] = [w for s, w in workers.items() if s != slot]
            workers[slot].signal(signal.SIGTERM)
            assert workers[slot].proc.wait(10) == 0
            # Handed back with its retry sent at once, and taken over by the other worker: not
            # the reaper's doing, which would wait out the minute above first.
            assert f"job {job_id}: released (attempt 1)" in workers[slot].log()
            assert f"job {job_id}: attempt 2 in 0.0s" in workers[slot].log()
            stream = await asyncio.wait_for(reader, 30)
            assert f"job {job_id}: running (attempt 2, worker {other.name}@" in other.log()
            job = await job_row(db, job_id)
            assert (job["status"], job["attempt"]) == ("completed", 2)
            assert stream.connections == 1
            assert stream.seqs == list(range(job["last_seq"] + 1))
            assert stream.payloads == [p for _, _, p in await logged_events(db, job_id)]
            assert [p for p in stream.payloads if p["type"] == "retry"] == [
                {"type": "retry", "attempt": 2, "reason": "worker shut down"}
            ]
            assert text_of(stream.payloads) == text_of(reference.payloads)
    finally:
        api.stop()
        for worker in workers.values():
            worker.stop()


# Each pool once, each on one broker: RabbitMQ and Redis take a rejected message back differently.
@pytest.mark.parametrize(("pool", "broker"), [("threads", "rabbitmq"), ("solo", "redis")])
async def test_a_worker_shutting_down_claims_nothing(pool, broker, tmp_path, log_dir):
    # One worker alone: the retry its hand-back publishes can reach only itself,
    # so nothing but its refusal to claim keeps attempt 2 from starting there. A
    # database of its own: no other test's reaper may run the job meanwhile.
    url = create_database("rs_alone")
    broker_url = services.rabbitmq_url if broker == "rabbitmq" else services.redis_url
    env = fault_env(
        url,
        broker_url,
        tmp_path,
        RUNSTREAM_STALE_AFTER_S="60",
        RUNSTREAM_PENDING_TIMEOUT_S="60",
        RUNSTREAM_MAX_ATTEMPTS="1",
    )
    first = spawn_worker(env, log_dir, f"alone-{pool}-1", "--pool", pool)
    api = start_api(env, log_dir, "alone-api")
    second = None
    try:
        async with (
            httpx.AsyncClient(base_url=api.url, timeout=30) as client,
            await psycopg.AsyncConnection.connect(url, autocommit=True) as db,
        ):
            wait_until(lambda: worker_ready(first), timeout=60, what="first worker ready")
            job_id = await submit(client, "a long answer", words=300)

            async def mid_run():
                job = await job_row(db, job_id)
                return job if job["status"] == "running" and job["last_seq"] >= 20 else None

            await eventually(mid_run, timeout=20, interval=0.01, what="mid-run")
            first.signal(signal.SIGTERM)
            assert first.proc.wait(20) == 0
            job = await job_row(db, job_id)
            assert (job["status"], job["attempt"], job["error"]) == ("pending", 1, "worker shut down")
            assert first.log().count(f"job {job_id}: running") == 1

            # One attempt allowed, and attempt 2 runs: the hand-back did not use it up.
            second = spawn_worker(env, log_dir, f"alone-{pool}-2", "--pool", pool)
            stream = await follow(client, job_id, reconnect=False)
            job = await job_row(db, job_id)
            assert (job["status"], job["attempt"]) == ("completed", 2)
            assert job["worker"].startswith(f"alone-{pool}-2@")
            assert stream.payloads == [p for _, _, p in await logged_events(db, job_id)]
            assert [p for p in stream.payloads if p["type"] == "retry"] == [
                {"type": "retry", "attempt": 2, "reason": "worker shut down"}
            ]
    finally:
        api.stop()
        first.stop()
        if second is not None:
            second.stop()
        drop_database(url)


# --- a commit the writer could not see -----------------------------------------------------


class CommitCutter:
    """A TCP proxy in front of Postgres that, when armed, lets one append through to
    the server and then cuts the connection before its answer reaches the client:
    the commit happened, and the client cannot know it.

    An append is one statement in autocommit: its answer is the statement's
    CommandComplete (one job: ``SELECT 1``) and then ReadyForQuery with the server
    idle, which it sends only after the implicit transaction committed (both come
    in one flush)."""

    APPEND_COMPLETE = b"C\x00\x00\x00\x0dSELECT 1\x00"
    READY_IDLE = b"Z\x00\x00\x00\x05I"

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.armed = False
        self.cuts = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src, dst, watch):
            try:
                while data := await src.read(65536):
                    if watch and self.armed and self.APPEND_COMPLETE in data and self.READY_IDLE in data:
                        self.armed = False
                        self.cuts += 1
                        break
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                for w in (client_w, server_w):
                    w.close()

        await asyncio.gather(pump(client_r, server_w, False), pump(server_r, client_w, True))


async def test_a_retried_append_whose_first_commit_happened_is_not_written_twice(fault_database, pool, db):
    port = int(fault_database.rsplit(":", 1)[1].split("/")[0])
    proxy = CommitCutter(port)
    await proxy.start()
    writer_pool = await open_pool(fault_database.replace(f":{port}/", f":{proxy.port}/"), 1, name="cut-writer")
    try:
        job = await create_job(pool, tenant=TENANT, message="m", model="offline")
        claim = await claim_job(pool, job.id, worker="test", stale_after_s=30)
        stops: list[str] = []
        writer = EventWriter(writer_pool)
        writer.open(claim.id, attempt=claim.attempt, last_seq=claim.job.last_seq, stop_run=stops.append)
        await writer.emit(claim.id, {"type": "reasoning", "text": "before"})
        await writer.drain(claim.id)
        proxy.armed = True
        await writer.emit(claim.id, {"type": "text_delta", "delta": "cut"})
        result = await writer.drain(claim.id)
        assert proxy.cuts == 1
        assert (result.applied, result.last_seq) == (True, 1)
        await writer.emit(claim.id, {"type": "text_delta", "delta": " after"})
        await writer.finish(claim.id, {"type": "done", "status": "completed"}, status="completed")
        assert stops == []
        assert [p for _, _, p in await logged_events(db, claim.id)] == [
            {"type": "reasoning", "text": "before"},
            {"type": "text_delta", "delta": "cut"},
            {"type": "text_delta", "delta": " after"},
            {"type": "done", "status": "completed"},
        ]
        assert (await job_row(db, claim.id))["status"] == "completed"
    finally:
        await writer_pool.close()
        await proxy.close()
