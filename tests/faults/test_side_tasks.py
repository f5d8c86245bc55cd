"""The loops beside a worker's jobs (the supervisor, whose ticks are the heartbeat,
the reaper and its partition making) survive a defect: an unexpected exception in one is logged with
its traceback and the loop goes on after a backoff, on a real database."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from runstream.core.settings import Settings
from runstream.db import jobs
from runstream.db.connector import open_pool
from runstream.db.partitions import MONTHS_AHEAD, attached_partitions, ensure_partitions, months_ahead
from runstream.db.retention import drop_partition
from runstream.tasks import reaper as reaper_module
from runstream.tasks import supervisor as supervisor_module
from runstream.tasks.reaper import Reaper
from runstream.tasks.side_tasks import backoff_s
from runstream.tasks.supervisor import Supervisor
from tests.faults.support import job_row
from tests.support.config import services
from tests.support.waiting import eventually

pytestmark = pytest.mark.faults

INTERVAL_S = 0.1


class Defect(Exception):
    """What a bug raises: nothing the loops expect (not a database error)."""


def failing_once(real: Callable[..., Awaitable[Any]], calls: list[float]) -> Callable[..., Awaitable[Any]]:
    """``real``, except that its first call raises Defect; ``calls`` gets the time of each call."""

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise Defect("injected")
        return await real(*args, **kwargs)

    return wrapped


async def heartbeat_at(db: psycopg.AsyncConnection, job_id: uuid.UUID) -> datetime:
    cur = await db.execute("SELECT heartbeat_at FROM jobs WHERE id = %s", [job_id])
    [beat] = await cur.fetchone()
    return beat


def unexpected_failures(caplog: pytest.LogCaptureFixture, loop: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(f"{loop}: tick failed unexpectedly")]


@pytest.fixture
async def pool(fault_database):
    pool = await open_pool(fault_database, 3, name="rs-side-tasks")
    yield pool
    await pool.close()


async def test_the_supervisor_heartbeats_again_after_a_defect(pool, db, monkeypatch, caplog):
    calls: list[float] = []
    monkeypatch.setattr(supervisor_module, "heartbeat", failing_once(jobs.heartbeat, calls))
    job = await jobs.create_job(pool, tenant="default", message="hi", model="offline")
    claim = await jobs.claim_job(pool, job.id, worker="side", stale_after_s=30)
    claimed_beat = await heartbeat_at(db, job.id)

    supervisor = Supervisor(pool, poll_s=INTERVAL_S, heartbeat_s=0, run_timeout_s=3600)
    supervisor.register(claim.id, claim.attempt)
    with caplog.at_level(logging.WARNING, logger="runstream.worker"):
        supervisor.start()
        try:

            async def beat_after_the_defect():
                return len(calls) >= 2 and await heartbeat_at(db, job.id) > claimed_beat

            await eventually(beat_after_the_defect, timeout=20, what="a heartbeat after the defect")
        finally:
            await supervisor.stop()

    [failure] = unexpected_failures(caplog, "supervisor")
    assert failure.levelno == logging.ERROR
    assert failure.exc_info is not None and failure.exc_info[0] is Defect
    assert (
        failure.getMessage()
        == f"supervisor: tick failed unexpectedly (1 in a row); next in {backoff_s(INTERVAL_S, 1):.1f}s"
    )
    # Restarted after the backoff, not at once.
    assert calls[1] - calls[0] >= backoff_s(INTERVAL_S, 1)
    assert (await job_row(db, job.id))["status"] == "running"


async def test_the_reaper_ends_stuck_jobs_again_after_a_defect(pool, db, monkeypatch, caplog):
    calls: list[float] = []
    monkeypatch.setattr(reaper_module, "finish_stuck", failing_once(jobs.finish_stuck, calls))
    # A run that died on its only attempt: the reaper's to fail.
    job = await jobs.create_job(pool, tenant="default", message="hi", model="offline")
    assert await jobs.claim_job(pool, job.id, worker="dead", stale_after_s=30)
    settings = Settings(
        CELERY_BROKER_URL=services.redis_url,
        reaper_interval_s=INTERVAL_S,
        stale_after_s=0.5,
        heartbeat_s=0.1,
        cancel_poll_s=0.1,
        max_attempts=1,
    )
    reaper = Reaper(pool, settings)
    with caplog.at_level(logging.WARNING, logger="runstream.worker"):
        reaper.start()
        try:

            async def failed():
                return (await job_row(db, job.id))["status"] == "failed"

            await eventually(failed, timeout=20, what="the dead run failed by the reaper")
        finally:
            await reaper.stop()

    [failure] = unexpected_failures(caplog, "reaper")
    assert failure.exc_info is not None and failure.exc_info[0] is Defect
    assert calls[1] - calls[0] >= backoff_s(INTERVAL_S, 1)
    cur = await db.execute("SELECT payload FROM job_events WHERE job_id = %s ORDER BY seq", [job.id])
    assert [row[0] for row in await cur.fetchall()] == [
        {"type": "error", "message": "gave up after 1 attempts: worker lost"}
    ]


async def test_the_reaper_makes_a_missing_partition_again_after_a_defect(pool, monkeypatch, caplog):
    calls: list[float] = []
    monkeypatch.setattr(reaper_module, "ensure_partitions", failing_once(ensure_partitions, calls))
    # The furthest month made ahead holds no job yet: gone, as if never made.
    furthest = months_ahead(datetime.now(UTC), MONTHS_AHEAD)[-1]
    assert await drop_partition(pool, furthest, datetime.now(UTC)) is not None

    async def attached() -> bool:
        async with pool.connection() as conn:
            return furthest in await attached_partitions(conn)

    assert not await attached()
    settings = Settings(CELERY_BROKER_URL=services.redis_url, reaper_interval_s=INTERVAL_S)
    reaper = Reaper(pool, settings)
    with caplog.at_level(logging.WARNING, logger="runstream.worker"):
        reaper.start()
        try:
            await eventually(attached, timeout=20, what="the furthest month's partition made again")
        finally:
            await reaper.stop()

    [failure] = unexpected_failures(caplog, "reaper (partitions)")
    assert failure.exc_info is not None and failure.exc_info[0] is Defect
    assert calls[1] - calls[0] >= backoff_s(INTERVAL_S, 1)
