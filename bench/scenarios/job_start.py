"""Job start: ``POST /api/jobs`` → the first event parsed by an SSE client.

The whole path: the API inserts the job and publishes the Celery task, a real
``runstream worker`` takes it from the broker, claims the job, builds the Agno
agent with the offline model, and its first event goes through the event
writer, Postgres, NOTIFY and the hub to the client, which opened the stream
as soon as the POST answered. Jobs run one after another, per broker: Redis,
RabbitMQ, and kombu's filesystem transport. Baseline: the in-memory recipe,
whose run starts as an asyncio task of the web process, with the same agent.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import redis
from kombu import Connection

from runstream.bench.context import Bench, target
from runstream.bench.services import (
    NO_LIMITS,
    Service,
    create_database,
    drop_database,
    start_api,
    start_worker,
)
from runstream.bench.sse_client import open_stream
from runstream.bench.stats import latency_summary, ratio
from runstream.core.settings import child_environment

WARMUP_JOBS = 3
JOB_TIMEOUT_S = 30
ANSWER_WORDS = 5
JOB = {"message": "bench", "metadata": {"offline": {"words": ANSWER_WORDS}}}


async def _time_jobs(count: int, start_one: Callable[[httpx.AsyncClient], Awaitable[float]], base: str) -> list[float]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for _ in range(WARMUP_JOBS):
            await start_one(http)
        return [await start_one(http) for _ in range(count)]


async def _first_event(port: int, path: str, started: float) -> float:
    stream = await open_stream("127.0.0.1", port, path, stamped=False)
    try:
        await asyncio.wait_for(stream.closed, JOB_TIMEOUT_S)  # one job at a time: wait for its end
    except TimeoutError:
        raise RuntimeError(f"{path}: not ended after {JOB_TIMEOUT_S}s ({stream.events} events)") from None
    if stream.first_event_at is None:
        raise RuntimeError(f"{path}: the stream ended without an event")
    return stream.first_event_at - started


def _runstream_job(api: Service) -> Callable[[httpx.AsyncClient], Awaitable[float]]:
    async def start_one(http: httpx.AsyncClient) -> float:
        started = time.time()
        job_id = (await http.post("/api/jobs", json=JOB)).json()["job_id"]
        return await _first_event(api.http_port, f"/api/jobs/{job_id}/events", started)

    return start_one


def _baseline_job(app: Service) -> Callable[[httpx.AsyncClient], Awaitable[float]]:
    async def start_one(http: httpx.AsyncClient) -> float:
        started = time.time()
        job_id = (await http.post("/jobs", json={"message": JOB["message"], "agent_words": ANSWER_WORDS})).json()[
            "job_id"
        ]
        return await _first_event(app.http_port, f"/jobs/{job_id}/events", started)

    return start_one


def _forget_queue(broker_url: str, queue: str) -> None:
    """The bench's queue (and, on Redis, kombu's binding keys) must not outlive it."""
    if broker_url.startswith("redis"):
        client = redis.Redis.from_url(broker_url)
        client.delete(queue, *client.keys(f"*{queue}*"))
    elif broker_url.startswith("amqp"):
        with Connection(broker_url) as conn:
            conn.default_channel.queue_delete(queue)


async def _broker_round(bench: Bench, database_url: str, broker: str, broker_url: str) -> list[float]:
    queue = f"rs-bench-{uuid.uuid4().hex[:12]}"
    env = (
        child_environment(
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=broker_url,
            RUNSTREAM_QUEUE=queue,
            RUNSTREAM_DATA_DIR=str(bench.work_dir / broker),
            RUNSTREAM_OFFLINE_DELAY_MS="0",
        )
        | NO_LIMITS
    )
    log_dir = bench.work_dir
    api, worker = await asyncio.gather(
        asyncio.to_thread(start_api, env, log_dir, f"api-{broker}"),
        asyncio.to_thread(start_worker, env, log_dir, f"worker-{broker}"),
    )
    try:
        return await _time_jobs(
            bench.profile.job_starts,
            _runstream_job(api),
            f"http://127.0.0.1:{api.port}",
        )
    except RuntimeError as exc:
        raise RuntimeError(f"job start with {broker}: {exc}\nworker log:\n{worker.log()[-3000:]}") from exc
    finally:
        await asyncio.gather(asyncio.to_thread(api.stop), asyncio.to_thread(worker.stop))
        if broker_url != "filesystem://":
            _forget_queue(broker_url, queue)


async def run(bench: Bench) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    brokers = {
        "redis": bench.brokers.redis_url,
        "rabbitmq": bench.brokers.rabbitmq_url,
        "filesystem": "filesystem://",
    }
    settings = bench.settings
    base = f"http://127.0.0.1:{bench.baseline.port}"
    theirs = latency_summary(await _time_jobs(bench.profile.job_starts, _baseline_job(bench.baseline), base))
    # A database of its own: the workers' reaper must not find the other scenarios'
    # jobs (the raw-insert baseline leaves its jobs pending) and run them.
    assert settings.database_url is not None
    database_url = await asyncio.to_thread(create_database, settings.database_url)
    results = []
    try:
        for broker, url in brokers.items():
            row: dict[str, Any] = {"broker": broker}
            try:
                ours = latency_summary(await _broker_round(bench, database_url, broker, url))
            except RuntimeError as exc:
                # One broker failing (its worker lost the consumer, say) must not
                # cost the whole run: the row says why, its figures are missing.
                print(f"bench: {exc}", file=sys.stderr)
                ours, row["error"] = latency_summary([]), str(exc).splitlines()[0]
            row.update(
                runstream=ours,
                baseline=theirs,
                ratio={k: ratio(ours[k], theirs[k]) for k in ("p50_ms", "p99_ms")},
            )
            results.append(row)
    finally:
        await asyncio.to_thread(drop_database, settings.database_url, database_url)
    redis_p50 = results[0]["runstream"]["p50_ms"]
    scenario = {
        "name": "job_start",
        "unit": "ms",
        "baseline": "in-memory recipe: asyncio task in the web process, the same agent and offline model",
        "results": results,
    }
    return scenario, [target("job_start", "job start p50 with Redis", redis_p50, "ms", "<=", 40)]
