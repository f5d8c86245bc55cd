"""Operations: readiness, Prometheus metrics, JSON logs with job ids, and retention."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from runstream.db.connector import open_pool
from runstream.db.retention import PruneCount, prune
from tests.conftest import create_database, drop_database
from tests.support.processes import RUNSTREAM, ApiServer, ServiceProcess, free_port, start_api, start_worker
from tests.support.sse import read_stream
from tests.support.waiting import eventually, wait_until

ASYNC = pytest.mark.asyncio(loop_scope="session")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus exposition → {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def ready(api: ApiServer) -> httpx.Response:
    return httpx.get(f"{api.url}/readyz", timeout=10)


def readiness_when(api: ApiServer, done: Callable[[httpx.Response], bool], what: str) -> httpx.Response:
    """Ask /readyz until ``done(answer)``; answers that answer."""

    def answer_if_done() -> httpx.Response | None:
        response = ready(api)
        return response if done(response) else None

    return wait_until(answer_if_done, timeout=20, interval=0.2, what=f"{api.name}'s /readyz: {what}")


def wait_for_status(api: ApiServer, status: int) -> httpx.Response:
    return readiness_when(api, lambda response: response.status_code == status, f"status {status}")


def test_readiness_fails_when_the_database_goes_away(service_env: dict[str, str], log_dir: Path) -> None:
    database_url = create_database("rs_readyz")
    api = start_api({**service_env, "DATABASE_URL": database_url}, log_dir, name="readyz-api")
    try:
        response = wait_for_status(api, 200)
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "checks": {"database": "ok", "listen": "ok", "broker": "ok"}}

        drop_database(database_url)
        response = wait_for_status(api, 503)
        assert response.status_code == 503
        body = response.json()
        # Reason codes only: no exception text (it names the database, the user, the host).
        assert body["status"] == "unavailable"
        # The pool may fail at once or keep trying past the check's timeout.
        assert body["checks"]["database"] in ("unreachable", "timeout")
        assert (body["checks"]["listen"], body["checks"]["broker"]) == ("reconnecting", "ok")
        assert make_url(database_url).database not in response.text
        # Liveness is about the process, which is fine.
        assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok"}
    finally:
        api.stop()
        drop_database(database_url)


def test_readiness_fails_when_the_broker_is_unreachable(service_env: dict[str, str], log_dir: Path) -> None:
    env = {**service_env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    api = start_api(env, log_dir, name="readyz-broker-api")
    try:
        # The LISTEN connection comes up after the API starts: once it has, only the broker is wrong.
        response = readiness_when(api, lambda response: response.json()["checks"]["listen"] == "ok", "LISTEN up")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert (checks["database"], checks["listen"]) == ("ok", "ok")
        assert checks["broker"] == "unreachable"
        # The cause is the operator's to read, in the log.
        assert "readiness: broker check failed" in api.log()
    finally:
        api.stop()


@pytest.fixture(scope="module")
def metered(service_env: dict[str, str], log_dir: Path) -> Iterator[tuple[ApiServer, ServiceProcess, int]]:
    """An API and a worker of their own (their own queue), the worker exporting metrics."""
    port = free_port()
    env = {
        **service_env,
        "RUNSTREAM_QUEUE": f"rs-metrics-{uuid.uuid4().hex[:8]}",
        "RUNSTREAM_WORKER_METRICS_PORT": str(port),
    }
    worker = start_worker(env, log_dir, "metrics-worker")
    api = start_api(env, log_dir, name="metrics-api")
    yield api, worker, port
    api.stop()
    worker.stop()


def json_lines(log: str) -> list[dict[str, Any]]:
    out = []
    for line in log.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


@ASYNC
async def test_metrics_and_job_logs(metered: tuple[ApiServer, ServiceProcess, int], pool: AsyncConnectionPool) -> None:
    api, worker, port = metered
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        response = await client.post(
            "/api/jobs", json={"message": "wait", "metadata": {"offline": {"tool_sleep_s": 2}}}
        )
        job_id = response.json()["job_id"]
        stream = asyncio.create_task(read_stream(client, f"/api/jobs/{job_id}/events"))

        # While the tool sleeps, the stream is open.
        async def one_open_stream() -> bool:
            metrics = samples((await client.get("/metrics")).text)
            return metrics[("runstream_open_streams", ())] == 1.0

        await eventually(one_open_stream, what="runstream_open_streams to be 1")
        await asyncio.wait_for(stream, 30)

        response = await client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        metrics = samples(response.text)
    async with pool.connection() as conn:
        rows = await (await conn.execute("SELECT status, count(*) AS n FROM jobs GROUP BY status")).fetchall()
        counts = {r["status"]: r["n"] for r in rows}
        last_seq = (await (await conn.execute("SELECT last_seq FROM jobs WHERE id = %s", (job_id,))).fetchone())[
            "last_seq"
        ]
    for status in ("pending", "running", "completed", "failed", "cancelled"):
        assert metrics[("runstream_jobs", (("status", status),))] == counts.get(status, 0)
    assert metrics[("runstream_open_streams", ())] == 0.0
    # What follows the silent tool reached a live stream: tool_result, reasoning, text, done at least.
    lag_count = metrics[("runstream_delivery_lag_seconds_count", ())]
    assert 4 <= lag_count <= last_seq + 1
    assert metrics[("runstream_delivery_lag_seconds_sum", ())] / lag_count < 1.0

    # The worker appended every event of the job, and only those.
    worker_metrics = samples(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
    assert worker_metrics[("runstream_events_appended_total", ())] == last_seq + 1
    assert worker_metrics[("runstream_append_seconds_count", ())] >= 1

    # One JSON line per transition, with the job id, in the API's and the worker's logs.
    api_lines = [r for r in json_lines(api.log()) if r.get("job_id") == job_id]
    assert [(r["logger"], r["message"], r["status"], r["dispatched"]) for r in api_lines] == [
        ("runstream.api", "job created", "pending", True)
    ]
    worker_lines = [r for r in json_lines(worker.log()) if r.get("job_id") == job_id]
    assert [(r["status"], r["attempt"]) for r in worker_lines] == [("running", 1), ("completed", 1)]
    assert all(r["level"] == "INFO" and r["logger"] == "runstream.worker" for r in worker_lines)


# --- retention -------------------------------------------------------------------

NOW = datetime.now(UTC)


async def seed_for_prune(pool: AsyncConnectionPool) -> dict[str, uuid.UUID]:
    """Two finished jobs past 30 days (3 + 2 events), one finished 10 days ago,
    and one started 60 days ago that is still running."""
    plan = {
        "old_completed": ("completed", NOW - timedelta(days=40), 3),
        "old_failed": ("failed", NOW - timedelta(days=31), 2),
        "recent": ("completed", NOW - timedelta(days=10), 2),
        "old_running": ("running", None, 1),
    }
    ids = {}
    async with pool.connection() as conn, conn.transaction():
        for name, (status, finished_at, n) in plan.items():
            job_id = ids[name] = uuid.uuid4()
            await conn.execute(
                "INSERT INTO jobs (id, message, model, status, attempt, last_seq, created_at, started_at, finished_at)"
                " VALUES (%s, 'x', 'offline', %s, 1, %s, %s, %s, %s)",
                (job_id, status, n - 1, NOW - timedelta(days=60), NOW - timedelta(days=60), finished_at),
            )
            for seq in range(n):
                await conn.execute(
                    "INSERT INTO job_events (job_id, seq, attempt, type, payload) VALUES (%s, %s, 1, 'text_delta', %s)",
                    (job_id, seq, Jsonb({"type": "text_delta", "delta": "x"})),
                )
    return ids


async def remaining(pool: AsyncConnectionPool) -> tuple[int, int]:
    async with pool.connection() as conn:
        jobs = (await (await conn.execute("SELECT count(*) FROM jobs")).fetchone())["count"]
        events = (await (await conn.execute("SELECT count(*) FROM job_events")).fetchone())["count"]
    return jobs, events


def runstream_prune(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [RUNSTREAM, "prune", "--older-than", "30d", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@ASYNC
async def test_prune_dry_run_then_real(service_env: dict[str, str]) -> None:
    database_url = create_database("rs_prune")
    pool = await open_pool(database_url, 1, name="prune-test")
    env = {**service_env, "DATABASE_URL": database_url}
    try:
        await seed_for_prune(pool)
        assert await remaining(pool) == (4, 8)

        out = runstream_prune(env)
        assert ": 2 jobs, 5 events" in out
        assert "dry run: nothing deleted (add --yes to delete)" in out
        assert await remaining(pool) == (4, 8)

        out = runstream_prune(env, "--yes")
        assert "deleted 2 jobs and 5 events" in out
        assert await remaining(pool) == (2, 3)  # the recent job (2 events) and the running one (1)
        assert "0 jobs, 0 events" in runstream_prune(env)

        # Batches stay small: at most events_per_batch events per statement, then the jobs.
        ids = await seed_for_prune(pool)
        batches = [b async for b in prune(pool, NOW - timedelta(days=30), jobs_per_batch=1, events_per_batch=2)]
        assert batches == [PruneCount(0, 2), PruneCount(0, 1), PruneCount(1, 0), PruneCount(0, 2), PruneCount(1, 0)]
        async with pool.connection() as conn:
            left = {r["id"] for r in await (await conn.execute("SELECT id FROM jobs")).fetchall()}
        assert ids["recent"] in left and ids["old_running"] in left
        assert ids["old_completed"] not in left and ids["old_failed"] not in left
    finally:
        await pool.close()
        drop_database(database_url)


def test_bad_durations_are_usage_errors(service_env: dict[str, str]) -> None:
    result = subprocess.run(
        [RUNSTREAM, "prune", "--older-than", "soon"], env=service_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "'soon' is not a duration like 30d, 12h, 90m, 45s or 2w" in result.stderr
