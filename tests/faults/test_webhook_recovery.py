"""A webhook delivery whose message never reached a worker (the process that
ended the job died before sending it, or the broker lost it) is found by the
reaper once overdue, and delivered, once."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.faults.support import fault_env, spawn_worker, worker_ready
from tests.support.config import services
from tests.support.processes import start_api
from tests.support.waiting import eventually, wait_until
from tests.test_webhooks import SECRET, Receiver, verify_signature

pytestmark = pytest.mark.faults


async def test_a_lost_delivery_is_sent_by_the_reaper(fault_database, db, tmp_path, log_dir):
    env = fault_env(
        fault_database,
        services.redis_url,
        tmp_path,
        RUNSTREAM_WEBHOOK_SECRETS=f"default={SECRET}",
        RUNSTREAM_WEBHOOK_ALLOW_PRIVATE="true",
    )
    worker = spawn_worker(env, log_dir, "hooks-reaper")
    api = start_api(env, log_dir, "hooks-reaper-api")
    receiver = Receiver()
    receiver.start()
    try:
        wait_until(lambda: worker_ready(worker), timeout=60, what="worker ready")
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            job = (await client.post("/api/jobs", json={"message": "hi"})).json()
            async with client.stream("GET", f"/api/jobs/{job['job_id']}/events") as stream:
                await stream.aread()
            # What the trigger writes when a job with a webhook ends, here with no
            # message sent for it: only the reaper can find it.
            await db.execute(
                "INSERT INTO webhook_deliveries (webhook_id, job_id, url, job_status, next_attempt_at)"
                " VALUES ('msg_lost', %s, %s, 'completed', now() - interval '1 minute')",
                [job["job_id"], receiver.url],
            )

            async def delivery_settled() -> dict | None:
                body = (await client.get(f"/api/jobs/{job['job_id']}/webhooks")).json()
                return body if body["deliveries"] and body["deliveries"][0]["status"] != "pending" else None

            body = await eventually(delivery_settled, timeout=60, what="the lost delivery sent by the reaper")
        [delivery] = body["deliveries"]
        assert delivery["status"] == "delivered"
        assert [(a["attempt"], a["outcome"]) for a in delivery["attempts"]] == [(1, "delivered")]
        [(headers, raw)] = receiver.requests
        assert headers["webhook-id"] == "msg_lost"
        assert verify_signature(SECRET, headers, raw)
        assert json.loads(raw)["data"]["job_id"] == job["job_id"]
    finally:
        receiver.stop()
        api.stop()
        worker.stop()
