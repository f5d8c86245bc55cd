"""The worker for real: jobs inserted in Postgres, dispatched through Redis to a
``runstream worker`` subprocess, judged by the rows it leaves in ``job_events``
and ``jobs``. The event writer is also driven in process against Postgres."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from psycopg_pool import AsyncConnectionPool

from runstream.core.broker import TASK_NAME, celery_config
from runstream.core.settings import Settings
from runstream.db.events import read_events
from runstream.db.jobs import SHUTDOWN_ERROR, cancel_job, claim_job, create_job, get_job, release_job
from runstream.tasks.event_writer import EventWriter
from tests.support.processes import ServiceProcess, start_worker
from tests.support.sse import text_joined
from tests.support.waiting import eventually

TENANT = "tests"
FINISHED = ("completed", "failed", "cancelled")


def dispatcher(env: dict[str, str]) -> Celery:
    """A Celery app that sends the way the API does, to the worker ``env`` describes."""
    settings = Settings(
        CELERY_BROKER_URL=env["CELERY_BROKER_URL"],
        queue=env["RUNSTREAM_QUEUE"],
        data_dir=Path(env["RUNSTREAM_DATA_DIR"]),
    )
    app = Celery("runstream-tests")
    app.conf.update(celery_config(settings))
    return app


@pytest.fixture(scope="module")
def send(worker: ServiceProcess, service_env: dict[str, str]) -> Celery:
    return dispatcher(service_env)


# A second worker on its own queue, with a short time limit and quick retries.
@pytest.fixture(scope="module")
def strict_worker_env(service_env: dict[str, str]) -> dict[str, str]:
    return {
        **service_env,
        "RUNSTREAM_QUEUE": f"{service_env['RUNSTREAM_QUEUE']}-strict",
        "RUNSTREAM_RUN_TIMEOUT_S": "1",
        "RUNSTREAM_MAX_ATTEMPTS": "2",
        "RUNSTREAM_RETRY_BACKOFF_S": "0.05",
        # A running job whose worker went quiet for 1 s is this worker's to take.
        "RUNSTREAM_STALE_AFTER_S": "1",
        "RUNSTREAM_HEARTBEAT_S": "0.2",
    }


@pytest.fixture(scope="module")
def send_strict(strict_worker_env: dict[str, str], log_dir: Path) -> Iterator[Celery]:
    process = start_worker(strict_worker_env, log_dir, "strict-worker")
    yield dispatcher(strict_worker_env)
    process.stop()


async def submit(
    pool: AsyncConnectionPool, app: Celery, message: str, *, model: str = "offline", **offline: Any
) -> uuid.UUID:
    """Insert a job (``offline`` are its metadata.offline knobs) and dispatch it as the API does."""
    job = await create_job(
        pool, tenant=TENANT, message=message, model=model, metadata={"offline": offline} if offline else {}
    )
    app.send_task(TASK_NAME, args=[str(job["id"])], task_id=str(job["id"]))
    return job["id"]


async def wait_for(pool: AsyncConnectionPool, job_id: uuid.UUID, statuses=FINISHED, timeout: float = 30.0) -> dict:
    async def job_if_there() -> dict | None:
        job = await get_job(pool, job_id, TENANT)
        return job if job["status"] in statuses else None

    return await eventually(job_if_there, timeout=timeout, what=f"job {job_id} to be {' or '.join(statuses)}")


async def wait_for_event(pool: AsyncConnectionPool, job_id: uuid.UUID, event_type: str, timeout: float = 30.0) -> None:
    async def has_event() -> bool:
        return any(p["type"] == event_type for p in await events(pool, job_id))

    await eventually(has_event, timeout=timeout, what=f"a {event_type} event of job {job_id}")


async def events(pool: AsyncConnectionPool, job_id: uuid.UUID) -> list[dict]:
    """The job's payloads, after checking that their seqs are 0, 1, 2, … with no gap."""
    rows = await read_events(pool, job_id, -1, 10_000)
    assert [r.seq for r in rows] == list(range(len(rows)))
    return [json.loads(r.data) for r in rows]


def calculator_run(expression: str, result: str) -> list[dict]:
    return [
        {"type": "reasoning", "text": f"The user wants {expression} computed; I will call the calculate tool."},
        {"type": "text_delta", "delta": f"Let me calculate {expression}."},
        {
            "type": "tool_call",
            "tool_name": "calculate",
            "argument": json.dumps({"expression": expression}),
            "call_id": "call_1",
        },
        {"type": "tool_result", "call_id": "call_1", "output": result},
        {"type": "reasoning", "text": f"The calculate tool returned {result}; I can answer now."},
        {"type": "text_delta", "delta": f"The result of {expression} is {result}."},
    ]


def sleep_run(seconds: str) -> list[dict]:
    return [
        {
            "type": "reasoning",
            "text": f"The job asks for a silent tool call of {seconds} s; I will call the sleep tool.",
        },
        {"type": "text_delta", "delta": f"Let me wait {seconds} seconds."},
        {
            "type": "tool_call",
            "tool_name": "sleep",
            "argument": json.dumps({"seconds": float(seconds)}),
            "call_id": "call_1",
        },
    ]


async def test_tool_job_completes_with_its_whole_story(pool, send):
    job_id = await submit(pool, send, "What is 2+3*4?")
    job = await wait_for(pool, job_id)
    payloads = await events(pool, job_id)
    assert text_joined(payloads) == [*calculator_run("2+3*4", "14"), {"type": "done", "status": "completed"}]
    assert (job["status"], job["error"], job["attempt"], job["last_seq"]) == ("completed", None, 1, len(payloads) - 1)
    assert job["started_at"] is not None and job["finished_at"] is not None


async def test_permanent_model_error_fails_the_job(pool, send):
    job_id = await submit(pool, send, "hi", fail="the model refused")
    job = await wait_for(pool, job_id)
    assert await events(pool, job_id) == [{"type": "error", "message": "the model refused"}]
    assert (job["status"], job["error"], job["attempt"]) == ("failed", "the model refused", 1)


async def test_unknown_model_fails_the_job(pool, send):
    job_id = await submit(pool, send, "hi", model="acme:large")
    job = await wait_for(pool, job_id)
    message = "unknown model provider 'acme': use one of openai, openrouter"
    assert await events(pool, job_id) == [{"type": "error", "message": message}]
    assert (job["status"], job["error"]) == ("failed", message)


async def test_transient_error_is_retried_with_a_retry_event(pool, send):
    job_id = await submit(pool, send, "hi", fail_attempts=1, words=4)
    job = await wait_for(pool, job_id, timeout=30)
    assert text_joined(await events(pool, job_id)) == [
        {"type": "retry", "attempt": 2, "reason": "offline model: simulated transient failure (attempt 1 of 1)"},
        {"type": "reasoning", "text": "No tool is needed for this prompt; I will answer it directly."},
        {"type": "text_delta", "delta": "You said: hi Here"},
        {"type": "done", "status": "completed"},
    ]
    assert (job["status"], job["error"], job["attempt"]) == ("completed", None, 2)


async def test_transient_errors_give_up_after_max_attempts(pool, send_strict):
    job_id = await submit(pool, send_strict, "hi", fail_attempts=5)
    job = await wait_for(pool, job_id)
    last_error = "offline model: simulated transient failure (attempt 2 of 5)"
    assert await events(pool, job_id) == [
        {"type": "retry", "attempt": 2, "reason": "offline model: simulated transient failure (attempt 1 of 5)"},
        {"type": "error", "message": last_error},
    ]
    assert (job["status"], job["error"], job["attempt"]) == ("failed", last_error, 2)


async def test_hand_backs_on_shutdown_leave_every_attempt_to_failures(pool, send_strict):
    # Two attempts handed back by workers going down (their row as such a release
    # leaves it), then transient failures: attempt 3 is retried, attempt 4 is the
    # last of the strict worker's 2.
    job = await create_job(
        pool, tenant=TENANT, message="hi", model="offline", metadata={"offline": {"fail_attempts": 5}}
    )
    for attempt in (1, 2):
        assert await claim_job(pool, job["id"], worker="going-down", stale_after_s=60)
        assert await release_job(pool, job["id"], attempt=attempt, error=SHUTDOWN_ERROR, handback=True)
    send_strict.send_task(TASK_NAME, args=[str(job["id"])], task_id=str(job["id"]))
    done = await wait_for(pool, job["id"])
    last_error = "offline model: simulated transient failure (attempt 4 of 5)"
    assert await events(pool, job["id"]) == [
        {"type": "retry", "attempt": 3, "reason": "worker shut down"},
        {"type": "retry", "attempt": 4, "reason": "offline model: simulated transient failure (attempt 3 of 5)"},
        {"type": "error", "message": last_error},
    ]
    assert (done["status"], done["error"], done["attempt"]) == ("failed", last_error, 4)


async def test_run_time_limit(pool, send_strict, strict_worker_env):
    job_id = await submit(pool, send_strict, "hi", tool_sleep_s=60)
    job = await wait_for(pool, job_id)
    assert text_joined(await events(pool, job_id)) == [
        *sleep_run("60"),
        {"type": "error", "message": "run exceeded time limit"},
    ]
    assert (job["status"], job["error"]) == ("failed", "run exceeded time limit")
    # By Postgres' own timestamps: the run had its whole limit, and was stopped
    # inside the tool, long before the tool could have answered.
    limit = timedelta(seconds=float(strict_worker_env["RUNSTREAM_RUN_TIMEOUT_S"]))
    assert limit <= job["finished_at"] - job["started_at"] < timedelta(seconds=60)


async def test_a_job_whose_worker_died_is_taken_over_with_a_retry_event(
    pool, send_strict, strict_worker_env, service_env, log_dir
):
    doomed_env = {**service_env, "RUNSTREAM_QUEUE": f"{service_env['RUNSTREAM_QUEUE']}-doomed"}
    doomed = start_worker(doomed_env, log_dir, "doomed-worker")
    try:
        job_id = await submit(pool, dispatcher(doomed_env), "hi", tool_sleep_s=60)
        await wait_for_event(pool, job_id, "tool_call")
    finally:
        doomed.kill()
    # What the reaper does once a running job's heartbeat is older than stale_after_s
    # (1 s for the strict worker): dispatch it again.
    stale_after = timedelta(seconds=float(strict_worker_env["RUNSTREAM_STALE_AFTER_S"]))

    async def heartbeat_is_stale() -> bool:
        job = await get_job(pool, job_id, TENANT)
        return datetime.now(UTC) - job["heartbeat_at"] > stale_after

    await eventually(heartbeat_is_stale, what=f"the heartbeat of job {job_id} to be older than {stale_after}")
    send_strict.send_task(TASK_NAME, args=[str(job_id)], task_id=str(job_id))
    job = await wait_for(pool, job_id)
    assert text_joined(await events(pool, job_id)) == [
        *sleep_run("60"),
        {"type": "retry", "attempt": 2, "reason": "worker lost"},
        *sleep_run("60"),
        {"type": "error", "message": "run exceeded time limit"},  # the strict worker's limit: 1 s
    ]
    assert (job["status"], job["attempt"]) == ("failed", 2)


async def test_cancel_stops_a_run_inside_a_silent_tool(pool, send):
    job_id = await submit(pool, send, "hi", tool_sleep_s=60)
    await wait_for_event(pool, job_id, "tool_call")
    assert await cancel_job(pool, job_id, TENANT) == "running"
    job = await wait_for(pool, job_id)
    assert text_joined(await events(pool, job_id)) == [*sleep_run("60"), {"type": "done", "status": "cancelled"}]
    assert (job["status"], job["error"]) == ("cancelled", None)
    # By Postgres' own timestamps: the run ended after the request, and inside the
    # tool, long before the tool could have answered.
    assert job["started_at"] < job["cancel_requested_at"] <= job["finished_at"]
    assert job["finished_at"] - job["started_at"] < timedelta(seconds=60)


async def test_jobs_run_concurrently_in_one_worker(pool, send):
    ids = [await submit(pool, send, f"job {i}", tool_sleep_s=1.5) for i in range(2)]
    jobs = [await wait_for(pool, job_id) for job_id in ids]
    # By Postgres' own timestamps: each run started before the other finished.
    assert max(job["started_at"] for job in jobs) < min(job["finished_at"] for job in jobs), "the runs did not overlap"
    for job_id, job in zip(ids, jobs, strict=True):
        assert job["status"] == "completed"
        assert text_joined(await events(pool, job_id)) == [
            *sleep_run("1.5"),
            {"type": "tool_result", "call_id": "call_1", "output": "slept 1.5 s"},
            {"type": "reasoning", "text": "The sleep tool returned slept 1.5 s; I can answer now."},
            {"type": "text_delta", "delta": "The sleep tool answered: slept 1.5 s."},
            {"type": "done", "status": "completed"},
        ]


async def test_a_duplicate_delivery_runs_the_job_once(pool, send, worker):
    job_id = await submit(pool, send, "What is 6*7?")
    send.send_task(TASK_NAME, args=[str(job_id)], task_id=str(job_id))
    job = await wait_for(pool, job_id)
    # Whichever delivery came second found the job not its to run, and is done with it.
    skipped = f"job {job_id}: skipped"
    await eventually(lambda: skipped in worker.log(), what=f"the worker to log {skipped!r}")
    assert worker.log().count(skipped) == 1
    assert text_joined(await events(pool, job_id)) == [
        *calculator_run("6*7", "42"),
        {"type": "done", "status": "completed"},
    ]
    assert (job["status"], job["attempt"]) == ("completed", 1)


# --- the event writer, in process ---------------------------------------------------


async def claimed_job(pool: AsyncConnectionPool):
    job = await create_job(pool, tenant=TENANT, message="m", model="offline")
    claim = await claim_job(pool, job["id"], worker="test", stale_after_s=30)
    assert claim is not None
    return claim


async def test_writer_group_commits_and_merges_text(pool):
    writer = EventWriter(pool)
    claims = [await claimed_job(pool) for _ in range(3)]
    stops: list[str] = []
    for claim in claims:
        writer.open(claim.id, attempt=claim.attempt, last_seq=claim.job["last_seq"], stop_run=stops.append)
    # All emitted before the loop runs the flush: one transaction per lane carries everything.
    for claim in claims:
        await writer.emit(claim.id, {"type": "reasoning", "text": "r"})
        for word in ("a ", "b ", "c"):
            await writer.emit(claim.id, {"type": "text_delta", "delta": word})
    results = [
        await writer.finish(claim.id, {"type": "done", "status": "completed"}, status="completed") for claim in claims
    ]
    assert [r.applied for r in results] == [True] * 3
    for claim in claims:
        assert await events(pool, claim.id) == [
            {"type": "reasoning", "text": "r"},
            {"type": "text_delta", "delta": "a b c"},
            {"type": "done", "status": "completed"},
        ]
        job = await get_job(pool, claim.id, TENANT)
        assert (job["status"], job["last_seq"]) == ("completed", 2)
    assert stops == []


async def test_writer_keeps_seqs_across_flushes(pool):
    writer = EventWriter(pool, max_buffered=2)
    claim = await claimed_job(pool)
    stops: list[str] = []
    writer.open(claim.id, attempt=claim.attempt, last_seq=claim.job["last_seq"], stop_run=stops.append)
    # max_buffered=2 makes emit wait for the database every other event; drains add more flushes.
    for i in range(7):
        await writer.emit(claim.id, {"type": "reasoning", "text": str(i)})
        if i % 3 == 0:
            await writer.drain(claim.id)
    await writer.finish(claim.id, {"type": "error", "message": "x"}, status="failed", error="x")
    assert [p.get("text") for p in await events(pool, claim.id)] == [*map(str, range(7)), None]
    job = await get_job(pool, claim.id, TENANT)
    assert (job["status"], job["error"], job["last_seq"]) == ("failed", "x", 7)
    assert stops == []


async def test_writer_lanes_commit_at_once_and_keep_each_job_in_order(pool, monkeypatch):
    from runstream.tasks import event_writer

    # Watch every group commit: how many run at once, and that no job is ever in two at once.
    in_flight: set[uuid.UUID] = set()
    running = most_at_once = 0
    real_append_many = event_writer.append_many

    async def watched_append_many(pool, batches):
        nonlocal running, most_at_once
        ids = {batch.job_id for batch in batches}
        assert not ids & in_flight, "a job's batches overlapped"
        in_flight.update(ids)
        running += 1
        most_at_once = max(most_at_once, running)
        try:
            return await real_append_many(pool, batches)
        finally:
            running -= 1
            in_flight.difference_update(ids)

    monkeypatch.setattr(event_writer, "append_many", watched_append_many)
    writer = EventWriter(pool, lanes=2, max_buffered=5)
    assert len(writer._lanes) == 2
    # Jobs in both lanes (the lane is the id modulo the lane count).
    claims = [await claimed_job(pool) for _ in range(6)]
    while len({c.id.int % 2 for c in claims}) < 2:
        claims.append(await claimed_job(pool))
    stops: list[str] = []
    for claim in claims:
        writer.open(claim.id, attempt=claim.attempt, last_seq=claim.job["last_seq"], stop_run=stops.append)

    async def run(claim) -> None:
        for i in range(40):
            await writer.emit(claim.id, {"type": "reasoning", "text": str(i)})
            if i % 7 == 0:
                # Hand the loop to the lane with a part-filled buffer: batches of every size.
                await writer.drain(claim.id)
        result = await writer.finish(claim.id, {"type": "done", "status": "completed"}, status="completed")
        assert (result.applied, result.last_seq) == (True, 40)
        writer.close(claim.id, attempt=claim.attempt)

    await asyncio.gather(*(run(claim) for claim in claims))
    for claim in claims:
        # ``events`` checks seqs 0..n with no gap.
        assert [p.get("text") for p in await events(pool, claim.id)] == [*map(str, range(40)), None]
    assert stops == []
    assert most_at_once == 2


def test_writer_leaves_a_connection_for_the_supervisor():
    pool = AsyncConnectionPool("postgresql://unused", min_size=1, max_size=2, open=False)
    assert len(EventWriter(pool, lanes=8)._lanes) == 1
    pool = AsyncConnectionPool("postgresql://unused", min_size=1, max_size=4, open=False)
    assert len(EventWriter(pool, lanes=8)._lanes) == 3
    assert len(EventWriter(pool, lanes=0)._lanes) == 1


async def test_writer_fences_a_run_whose_job_was_taken_over(pool):
    writer = EventWriter(pool)
    claim = await claimed_job(pool)
    stops: list[str] = []
    # Attempt 2 is not the job's attempt: as if another worker had claimed it since.
    writer.open(claim.id, attempt=claim.attempt + 1, last_seq=claim.job["last_seq"], stop_run=stops.append)
    await writer.emit(claim.id, {"type": "reasoning", "text": "r"})
    assert not (await writer.drain(claim.id)).applied
    assert stops == ["fenced"]
    await writer.emit(claim.id, {"type": "reasoning", "text": "ignored"})
    assert not (await writer.finish(claim.id, {"type": "done", "status": "completed"}, status="completed")).applied
    assert await events(pool, claim.id) == []
    assert (await get_job(pool, claim.id, TENANT))["status"] == "running"


async def test_writer_fences_an_earlier_attempt_when_this_process_claims_the_job_again(pool):
    # A database outage let the run's heartbeat go stale; the job was dispatched
    # again and this same process claimed attempt 2 while attempt 1 still ran here.
    writer = EventWriter(pool)
    first = await claimed_job(pool)
    stops: dict[int, list[str]] = {1: [], 2: []}
    writer.open(first.id, attempt=first.attempt, last_seq=first.job["last_seq"], stop_run=stops[1].append)
    await writer.emit(first.id, {"type": "text_delta", "delta": "one "})
    assert (await writer.drain(first.id)).applied
    second = await claim_job(pool, first.id, worker="test", stale_after_s=0)
    assert second is not None and second.attempt == 2
    writer.open(second.id, attempt=second.attempt, last_seq=second.job["last_seq"], stop_run=stops[2].append)
    assert stops == {1: ["fenced"], 2: []}
    # Attempt 1's run ends and closes its log: attempt 2's stays open.
    writer.close(first.id, attempt=first.attempt)
    await writer.emit(second.id, {"type": "text_delta", "delta": "two"})
    result = await writer.finish(second.id, {"type": "done", "status": "completed"}, status="completed")
    assert (result.applied, result.last_seq) == (True, 2)
    writer.close(second.id, attempt=second.attempt)
    rows = await read_events(pool, first.id, -1, 10)
    assert [(r.seq, json.loads(r.data)) for r in rows] == [
        (0, {"type": "text_delta", "delta": "one "}),
        (1, {"type": "text_delta", "delta": "two"}),
        (2, {"type": "done", "status": "completed"}),
    ]
    assert stops == {1: ["fenced"], 2: []}


async def test_writer_reports_a_cancel_request(pool):
    writer = EventWriter(pool)
    claim = await claimed_job(pool)
    stops: list[str] = []
    writer.open(claim.id, attempt=claim.attempt, last_seq=claim.job["last_seq"], stop_run=stops.append)
    assert await cancel_job(pool, claim.id, TENANT) == "running"
    await writer.emit(claim.id, {"type": "reasoning", "text": "r"})
    assert (await writer.drain(claim.id)).cancel_requested
    assert stops == ["cancelled"]
    result = await writer.finish(claim.id, {"type": "done", "status": "cancelled"}, status="cancelled")
    assert (result.applied, result.status) == (True, "cancelled")
