"""kill -9 of the worker running a job, five times in a row on different jobs,
with RabbitMQ and with Redis as the broker.

Two workers serve the queue; the one running the job is SIGKILLed mid-run and a
replacement is started (so two serve again by the next round). The job must
complete on a second attempt, with one ``retry`` event, its seqs gap-free, and
an SSE client connected from the start must see all of it on ONE connection.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from kombu import Connection

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
from tests.support.processes import start_api
from tests.support.waiting import eventually, wait_until

pytestmark = pytest.mark.faults

MESSAGE = "tell me about durable streams"
WORDS = 150  # about 1.5 s of streaming at 10 ms a word
ROUNDS = 5


async def kill_mid_run(
    client: httpx.AsyncClient,
    db,
    env: dict[str, str],
    log_dir,
    workers: dict,
    name: str,
    round_: int,
    reference,
    agent: str | None = None,
) -> None:
    """One round: a job is SIGKILLed with its worker mid-run, and must complete on
    a second attempt exactly as ``reference`` did, on one SSE connection."""
    for worker in workers.values():
        wait_until(lambda w=worker: worker_ready(w), timeout=60, what=f"{worker.name} ready")
    job_id = await submit(client, MESSAGE, agent=agent, words=WORDS)
    reader = asyncio.create_task(follow(client, job_id, reconnect=False, timeout=60))

    async def mid_run(job_id=job_id):
        job = await job_row(db, job_id)
        return job if job["status"] == "running" and job["last_seq"] >= 20 else None

    job = await eventually(mid_run, timeout=20, interval=0.01, what=f"round {round_}: job {job_id} mid-run")
    [slot] = [s for s, w in workers.items() if job["worker"].startswith(f"{w.name}@")]
    workers[slot].kill()
    # The replacement comes up while the other worker recovers the job.
    workers[slot] = spawn_worker(env, log_dir, f"{name}-{slot}{round_}")

    stream = await asyncio.wait_for(reader, 60)
    job = await job_row(db, job_id)
    assert (job["status"], job["attempt"], job["error"]) == ("completed", 2, None), job
    # One connection carried the whole stream: seq 0 to the terminal event.
    assert stream.connections == 1
    assert stream.seqs == list(range(job["last_seq"] + 1))
    assert stream.payloads == [payload for _, _, payload in await logged_events(db, job_id)]
    assert [p for p in stream.payloads if p["type"] == "retry"] == [
        {"type": "retry", "attempt": 2, "reason": "worker lost"}
    ]
    assert stream.payloads[-1] == {"type": "done", "status": "completed"}
    assert text_of(stream.payloads) == text_of(reference.payloads)


@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
async def test_kill_9_worker_mid_run_five_times(broker, fault_database, db, tmp_path, log_dir):
    broker_url = services.rabbitmq_url if broker == "rabbitmq" else services.redis_url
    env = fault_env(fault_database, broker_url, tmp_path)
    workers = {slot: spawn_worker(env, log_dir, f"crash-{broker}-{slot}0") for slot in ("a", "b")}
    api = start_api(env, log_dir, f"crash-{broker}-api")
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            for worker in workers.values():
                wait_until(lambda w=worker: worker_ready(w), timeout=60, what=f"{worker.name} ready")
            reference = await follow(client, await submit(client, MESSAGE, words=WORDS), reconnect=False)
            assert reference.payloads[-1] == {"type": "done", "status": "completed"}

            for round_ in range(1, ROUNDS + 1):
                await kill_mid_run(client, db, env, log_dir, workers, f"crash-{broker}", round_, reference)
    finally:
        api.stop()
        for worker in workers.values():
            worker.kill()
        if broker == "rabbitmq":
            with Connection(broker_url) as connection:
                connection.default_channel.queue_delete(env["RUNSTREAM_QUEUE"])


async def test_kill_9_mid_run_of_a_users_agent(fault_database, db, tmp_path, log_dir):
    """A user's agent (a factory from the registry, with a tool of its own) recovers
    from a kill -9 exactly as the built-in one does."""
    env = fault_env(
        fault_database,
        services.redis_url,
        tmp_path,
        RUNSTREAM_AGENTS="assistant=runstream.tasks.assistant:build_assistant,slow=tests.agents_fixture:slow_support",
    )
    workers = {slot: spawn_worker(env, log_dir, f"crash-agent-{slot}0") for slot in ("a", "b")}
    api = start_api(env, log_dir, "crash-agent-api")
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            for worker in workers.values():
                wait_until(lambda w=worker: worker_ready(w), timeout=60, what=f"{worker.name} ready")
            reference = await follow(client, await submit(client, MESSAGE, agent="slow", words=WORDS), reconnect=False)
            assert reference.payloads[-1] == {"type": "done", "status": "completed"}
            await kill_mid_run(client, db, env, log_dir, workers, "crash-agent", 1, reference, agent="slow")
            ran = (await client.get("/api/jobs", params={"agent": "slow"})).json()["jobs"]
            assert [(j["agent"], j["status"]) for j in ran] == [("slow", "completed")] * 2
    finally:
        api.stop()
        for worker in workers.values():
            worker.kill()
