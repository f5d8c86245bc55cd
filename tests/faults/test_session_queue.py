"""A job queued behind its session's run survives the kill -9 of the worker
running that run: the reaper (on, and quick) recovers the run, never dispatches
the queued job early, and the queued job runs once, right after, seeing the
recovered answer as history.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.faults.support import fault_env, follow, spawn_worker, text_of, worker_ready
from tests.support.config import services
from tests.support.processes import start_api
from tests.support.waiting import eventually, wait_until

pytestmark = pytest.mark.faults

FIRST = "tell me about durable streams"
RECALL = "what did i say before?"


async def test_queued_job_survives_kill_9_of_the_run_before_it(fault_database, db, tmp_path, log_dir):
    env = fault_env(fault_database, services.redis_url, tmp_path)
    worker = spawn_worker(env, log_dir, "queue-a")
    api = start_api(env, log_dir, "queue-api")
    replacement = None
    try:
        wait_until(lambda: worker_ready(worker), timeout=60, what="worker ready")
        session = f"s-{uuid.uuid4().hex}"
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            first = (
                await client.post(
                    "/api/jobs",
                    json={
                        "message": FIRST,
                        "session_id": session,
                        "metadata": {"offline": {"words": 150}},
                    },
                )
            ).json()
            second = (await client.post("/api/jobs", json={"message": RECALL, "session_id": session})).json()
            assert (first["queued"], second["queued"]) == (False, True)

            async def row(job_id: str) -> dict:
                cur = await db.execute(
                    "SELECT status, attempt, queued_at, started_at, finished_at FROM jobs WHERE id = %s", [job_id]
                )
                status, attempt, queued_at, started_at, finished_at = await cur.fetchone()
                return {
                    "status": status,
                    "attempt": attempt,
                    "queued": queued_at is not None,
                    "started_at": started_at,
                    "finished_at": finished_at,
                }

            async def mid_run() -> bool:
                cur = await db.execute("SELECT status, last_seq FROM jobs WHERE id = %s", [first["job_id"]])
                status, last_seq = await cur.fetchone()
                return status == "running" and last_seq >= 20

            await eventually(mid_run, timeout=30, interval=0.01, what="first run mid-way")
            worker.kill()
            replacement = spawn_worker(env, log_dir, "queue-b")

            # The run is taken up again (attempt 2) by the replacement's reaper;
            # the queued job is still waiting, never dispatched.
            async def retried() -> bool:
                return (await row(first["job_id"]))["attempt"] == 2

            await eventually(retried, timeout=60, what="first run on its second attempt")
            assert (await row(second["job_id"]))["status"] == "pending"
            assert (await row(second["job_id"]))["queued"] is True

            stream = await follow(client, uuid.UUID(second["job_id"]), reconnect=True, timeout=90)
            a, b = await row(first["job_id"]), await row(second["job_id"])
            assert (a["status"], a["attempt"]) == ("completed", 2)
            assert (b["status"], b["attempt"], b["queued"]) == ("completed", 1, False)
            assert a["finished_at"] <= b["started_at"]
            assert text_of(stream.payloads) == f'You said: "{FIRST}"'
    finally:
        api.stop()
        for process in (worker, replacement):
            if process is not None:
                process.stop()
