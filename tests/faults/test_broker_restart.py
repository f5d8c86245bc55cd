"""Redis killed and started again empty while a worker holds a running job (an
unacknowledged message): the worker reconnects and goes on consuming."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest

from runstream.bench.private_services import ThrowawayRedis
from tests.conftest import create_database, drop_database
from tests.faults.support import (
    fault_env,
    follow,
    job_row,
    logged_events,
    submit,
)
from tests.support.processes import start_api, start_worker
from tests.support.waiting import eventually

pytestmark = pytest.mark.faults

FINISHED = ("completed", "failed", "cancelled")


async def test_worker_survives_a_broker_restart_while_it_holds_a_running_job(tmp_path, log_dir):
    broker = ThrowawayRedis()
    broker.start()
    database_url = create_database("rs_fault")
    worker = api = None
    try:
        env = fault_env(database_url, broker.url, tmp_path)
        worker = start_worker(env, log_dir, "broker-restart-worker")
        api = start_api(env, log_dir, "broker-restart-api")
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            # A silent tool call keeps the run, and its unacknowledged message, in the worker.
            held = await submit(client, "hold the message", tool_sleep_s=3)

            async def in_tool():
                return any(p["type"] == "tool_call" for _, _, p in await logged_events(db, held))

            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
                await eventually(in_tool, timeout=30, what="the held run in its tool call")
                broker.kill()
                broker.start()
                # Jobs submitted after the restart reach the same worker through the new broker.
                after = [await submit(client, f"after the restart {i}", words=5) for i in range(3)]
                followers = [follow(client, job_id, reconnect=True, timeout=60) for job_id in [held, *after]]
                try:
                    streams = await asyncio.wait_for(asyncio.gather(*followers), 60)
                except TimeoutError:
                    raise AssertionError(f"jobs unfinished; worker exit code {worker.proc.poll()}") from None
                for job_id, stream in zip([held, *after], streams, strict=True):
                    assert stream.payloads[-1] == {"type": "done", "status": "completed"}, job_id
                    assert stream.payloads == [p for _, _, p in await logged_events(db, job_id)]
                    assert (await job_row(db, job_id))["status"] == "completed"
                # ... which was never lost: the same process served them all.
                assert worker.proc.poll() is None, worker.log()[-3000:]
                assert {(await job_row(db, job_id))["worker"] for job_id in after} == {
                    (await job_row(db, held))["worker"]
                }
                assert "Unrecoverable error" not in worker.log()
    finally:
        for process in (api, worker):
            if process is not None:
                process.kill()
        broker.remove()
        drop_database(database_url)
