"""The baseline: DeltaKit's in-memory background-task recipe, on Starlette + uvicorn.

As DeltaKit's published FastAPI recipe has it: a
dict of jobs, one ``asyncio.Condition`` per job, the run as an asyncio task of
the web process, events appended to a list and ``notify_all``; each stream waits
on the condition and sends ``json.dumps(payload)`` per event. No database, no
broker: the floor that a durable design is compared with.

A job runs either the bench's stamped schedule (``bench.stamps``) or the same
Agno agent and offline model as Runstream's worker (for job start). Bench-only
additions: stamped jobs can be held until ``POST /go`` (so subscribers connect
first), and ``POST /reset`` forgets every job between scenarios.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agno.agent import Agent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from runstream.bench.stamps import stamp_run
from runstream.tasks.agent_events import run_payloads
from runstream.tasks.offline_model import OfflineKnobs, OfflineModel
from runstream.tasks.pauses import Pause
from runstream.tasks.tools import TOOLS


@dataclass
class JobEvent:
    event_id: int
    payload: dict[str, Any]


@dataclass
class BackgroundJob:
    job_id: str
    message: str
    status: str = "pending"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    done: bool = False
    events: list[JobEvent] = field(default_factory=list)
    condition: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None


jobs: dict[str, BackgroundJob] = {}
# Held jobs start when this is set; ``/go`` sets it and puts a fresh one in its place.
go = asyncio.Event()


async def _publish(job: BackgroundJob, payload: dict[str, Any]) -> None:
    async with job.condition:
        job.events.append(JobEvent(event_id=len(job.events), payload=payload))
        job.condition.notify_all()


async def _finish(job: BackgroundJob, status: str, payload: dict[str, Any]) -> None:
    job.status = status
    job.done = True
    await _publish(job, payload)


async def run_stamps(job: BackgroundJob, spec: dict[str, Any], start: asyncio.Event | None) -> None:
    if start is not None:
        await start.wait()
    job.status = "running"
    await stamp_run(
        lambda p: _publish(job, p),
        events=spec["events"],
        rate=spec["rate"],
        offset=spec["offset"],
    )
    await _finish(job, "completed", {"type": "done", "status": "completed"})


async def run_agent(job: BackgroundJob, words: int) -> None:
    """The recipe's ``run_agent``, with Runstream's agent: same model, tools and event mapping."""
    model = OfflineModel(delay_ms=0, knobs=OfflineKnobs(words=words))
    agent = Agent(model=model, tools=list(TOOLS), telemetry=False)
    job.status = "running"
    async for payload in run_payloads(agent, job.message):
        assert not isinstance(payload, Pause), "the recipe's tools never wait for a person"
        if payload["type"] in ("done", "error"):
            await _finish(job, "completed" if payload["type"] == "done" else "failed", payload)
            return
        await _publish(job, payload)


async def create_job(request: Request) -> JSONResponse:
    spec = await request.json()
    job = BackgroundJob(job_id=str(uuid.uuid4()), message=spec.get("message", "bench"))
    jobs[job.job_id] = job
    if "agent_words" in spec:
        job.task = asyncio.create_task(run_agent(job, spec["agent_words"]))
    else:
        job.task = asyncio.create_task(run_stamps(job, spec, go if spec.get("hold") else None))
    return JSONResponse({"job_id": job.job_id, "status": job.status})


async def start_held(request: Request) -> JSONResponse:
    global go
    released, go = go, asyncio.Event()
    released.set()
    return JSONResponse({"status": "ok"})


async def reset(request: Request) -> JSONResponse:
    for job in jobs.values():
        if job.task is not None:
            job.task.cancel()
    jobs.clear()
    return JSONResponse({"status": "ok"})


async def get_job(request: Request) -> JSONResponse:
    job = jobs.get(request.path_params["job_id"])
    if job is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse({"job_id": job.job_id, "status": job.status, "events": len(job.events)})


async def stream_job_events(request: Request) -> StreamingResponse | JSONResponse:
    job = jobs.get(request.path_params["job_id"])
    if job is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    last_event_id = int(request.query_params.get("last_event_id", -1))

    async def event_generator():  # the recipe's, line for line
        next_index = last_event_id + 1
        while True:
            async with job.condition:
                while next_index >= len(job.events) and not job.done:
                    await job.condition.wait()
                pending = job.events[next_index:]
                is_done = job.done and next_index >= len(job.events)
            for item in pending:
                yield f"id: {item.event_id}\n"
                yield f"data: {json.dumps(item.payload)}\n\n"
                next_index = item.event_id + 1
            if is_done:
                break

    return StreamingResponse(
        event_generator(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/go", start_held, methods=["POST"]),
            Route("/reset", reset, methods=["POST"]),
            Route("/jobs", create_job, methods=["POST"]),
            Route("/jobs/{job_id}", get_job),
            Route("/jobs/{job_id}/events", stream_job_events),
        ]
    )
