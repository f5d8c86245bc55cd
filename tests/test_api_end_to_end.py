"""The whole path with a real worker: POST a job, stream it the DeltaKit way, cancel one."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from runstream.db import events
from tests.support.sse import deltakit_events, frames, read_stream, text_joined
from tests.support.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def start(client: httpx.AsyncClient, **body) -> str:
    response = await client.post("/api/jobs", json={"message": "Tell me something", **body})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    return response.json()["job_id"]


async def test_a_job_streams_in_order_and_matches_its_stored_log(
    client: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    job_id = await start(client, metadata={"offline": {"words": 40}})
    body = await read_stream(client, f"/api/jobs/{job_id}/events")

    assert "\r" not in body
    received = deltakit_events(body)
    assert [frame.id for frame in frames(body)] == list(range(len(received)))
    assert received[-1] == {"type": "done", "status": "completed"}
    assert [e["type"] for e in received].count("done") == 1
    assert "".join(e["delta"] for e in received if e["type"] == "text_delta").strip()

    rows = await events.read_events(pool, uuid.UUID(job_id), -1, 100_000)
    assert [json.loads(row.data) for row in rows] == received
    status = (await client.get(f"/api/jobs/{job_id}")).json()
    assert status["status"] == "completed"
    assert status["last_event_id"] == len(received) - 1


async def test_a_late_joiner_and_a_resumer_get_the_same_log(client: httpx.AsyncClient) -> None:
    job_id = await start(client, metadata={"offline": {"words": 20}})
    full = await read_stream(client, f"/api/jobs/{job_id}/events")
    n = len(frames(full))
    late = await read_stream(client, f"/api/jobs/{job_id}/events")
    assert late == full
    resumed = await read_stream(client, f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": str(n // 2)})
    assert frames(resumed) == frames(full)[n // 2 + 1 :]


async def test_cancel_a_running_job_ends_its_stream(client: httpx.AsyncClient) -> None:
    job_id = await start(client, metadata={"offline": {"tool_sleep_s": 30}})
    stream = asyncio.create_task(read_stream(client, f"/api/jobs/{job_id}/events", timeout=30))

    async def running() -> bool:
        return (await client.get(f"/api/jobs/{job_id}")).json()["status"] == "running"

    await eventually(running, what=f"job {job_id} to be running")
    response = await client.post(f"/api/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    body = await asyncio.wait_for(stream, 30)
    assert deltakit_events(body)[-1] == {"type": "done", "status": "cancelled"}
    assert (await client.get(f"/api/jobs/{job_id}")).json()["status"] == "cancelled"


async def test_a_tool_prompt_streams_its_exact_events(client: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    response = await client.post("/api/jobs", json={"message": "What is 2+3*4?"})
    job_id = response.json()["job_id"]
    body = await read_stream(client, f"/api/jobs/{job_id}/events")
    received = deltakit_events(body)

    [call] = [e for e in received if e["type"] == "tool_call"]
    assert text_joined(received) == [
        {"type": "reasoning", "text": "The user wants 2+3*4 computed; I will call the calculate tool."},
        {"type": "text_delta", "delta": "Let me calculate 2+3*4."},
        {
            "type": "tool_call",
            "tool_name": "calculate",
            "argument": '{"expression": "2+3*4"}',
            "call_id": call["call_id"],
        },
        # The tool's real output: Agno ran the Python tool.
        {"type": "tool_result", "call_id": call["call_id"], "output": "14"},
        {"type": "reasoning", "text": "The calculate tool returned 14; I can answer now."},
        {"type": "text_delta", "delta": "The result of 2+3*4 is 14."},
        {"type": "done", "status": "completed"},
    ]
    assert [frame.id for frame in frames(body)] == list(range(len(received)))
    rows = await events.read_events(pool, uuid.UUID(job_id), -1, 1000)
    assert [json.loads(row.data) for row in rows] == received
    assert (await client.get(f"/api/jobs/{job_id}")).json()["status"] == "completed"


async def test_twenty_jobs_at_once_each_stream_complete_and_ordered(
    client: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    job_ids = await asyncio.gather(
        *(start(client, message=f"job number {n}", metadata={"offline": {"words": 25}}) for n in range(20))
    )
    bodies = await asyncio.gather(*(read_stream(client, f"/api/jobs/{job_id}/events") for job_id in job_ids))

    for job_id, body in zip(job_ids, bodies, strict=True):
        received = deltakit_events(body)
        assert [frame.id for frame in frames(body)] == list(range(len(received)))
        assert received[-1] == {"type": "done", "status": "completed"}
        assert len("".join(e["delta"] for e in received if e["type"] == "text_delta").split()) == 25
        rows = await events.read_events(pool, uuid.UUID(job_id), -1, 1000)
        assert [json.loads(row.data) for row in rows] == received
