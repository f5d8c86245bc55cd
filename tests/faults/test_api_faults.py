"""The API process killed (-9) or stopped (SIGTERM, within and past its grace) while a client streams a job;
a cancel while the run sits in a long silent tool call."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from tests.faults.support import (
    Stream,
    fault_env,
    follow,
    job_row,
    logged_events,
    submit,
    text_of,
)
from tests.support.config import services
from tests.support.processes import start_api, start_worker
from tests.support.waiting import eventually

pytestmark = pytest.mark.faults

MESSAGE = "stream me a long answer"
WORDS = 300  # about 3 s of streaming
TOOL_SLEEP_S = 60


@pytest.fixture(scope="module")
def env(fault_database, tmp_path_factory):
    return fault_env(fault_database, services.redis_url, tmp_path_factory.mktemp("api-faults"))


@pytest.fixture(scope="module")
def worker(env, log_dir):
    process = start_worker(env, log_dir, "api-faults-worker")
    yield process
    process.stop()


async def mid_stream(db, job_id):
    async def check():
        job = await job_row(db, job_id)
        return job["last_seq"] >= 20

    await eventually(check, timeout=20, interval=0.01, what=f"job {job_id} mid-run")


async def resumed_equals_uninterrupted(client, db, job_id, first: Stream, reference: Stream) -> None:
    """Resume ``first`` with Last-Event-ID on one new connection; the whole must be the uninterrupted run."""
    assert first.events and not first.finished
    whole = await follow(client, job_id, reconnect=False, stream=first)
    assert whole.connections == 2
    assert whole.seqs == list(range(len(whole.seqs)))
    assert whole.payloads == [payload for _, _, payload in await logged_events(db, job_id)]
    assert whole.payloads[-1] == {"type": "done", "status": "completed"}
    assert text_of(whole.payloads) == text_of(reference.payloads)


async def test_kill_9_api_mid_stream_then_resume(env, worker, db, log_dir):
    api = start_api(env, log_dir, "api-crash-1")
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            reference = await follow(client, await submit(client, MESSAGE, words=WORDS), reconnect=False)
            job_id = await submit(client, MESSAGE, words=WORDS)
            first = Stream()
            reader = asyncio.create_task(follow(client, job_id, reconnect=False, stream=first))
            await mid_stream(db, job_id)
            api.kill()
            with pytest.raises(httpx.TransportError):
                await reader
            api = start_api(env, log_dir, "api-crash-2", port=api.port)
            await resumed_equals_uninterrupted(client, db, job_id, first, reference)
    finally:
        api.stop()


async def test_sigterm_lets_open_streams_finish_with_their_terminal_event(env, worker, db, log_dir):
    api = start_api(env, log_dir, "api-term-1")
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        job_id = await submit(client, MESSAGE, words=WORDS)
        first = Stream()
        reader = asyncio.create_task(follow(client, job_id, reconnect=False, stream=first))
        await mid_stream(db, job_id)
        api.signal(signal.SIGTERM)
        # Within the grace period (30 s by default) the run ends: the stream goes on
        # to its terminal event on the same connection, and only then does the
        # process finish shutting down.
        whole = await asyncio.wait_for(reader, 30)
        assert whole.connections == 1 and whole.finished
        assert whole.payloads == [payload for _, _, payload in await logged_events(db, job_id)]
        assert whole.payloads[-1] == {"type": "done", "status": "completed"}
        # uvicorn ends by re-raising the signal it caught, once its shutdown is done.
        assert api.proc.wait(10) == -signal.SIGTERM
        assert "Application shutdown complete." in api.log()
        assert "cutting" not in api.log()


async def test_sigterm_past_the_grace_cuts_streams_uncleanly_and_they_resume(env, worker, db, log_dir):
    api = start_api({**env, "RUNSTREAM_SHUTDOWN_GRACE_S": "0.5"}, log_dir, "api-term-2")
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            reference = await follow(client, await submit(client, MESSAGE, words=WORDS), reconnect=False)
            job_id = await submit(client, MESSAGE, words=WORDS)
            first = Stream()
            reader = asyncio.create_task(follow(client, job_id, reconnect=False, stream=first))
            await mid_stream(db, job_id)
            api.signal(signal.SIGTERM)
            # Not a clean end: the chunked body is never terminated, so a client
            # (DeltaKit's fetch reader, curl, httpx) cannot take the cut for the end.
            with pytest.raises(httpx.RemoteProtocolError):
                await asyncio.wait_for(reader, 10)
            assert not first.finished
            assert api.proc.wait(10) == -signal.SIGTERM
            assert "cutting 1 open stream(s)" in api.log()
            assert (await job_row(db, job_id))["status"] == "running"
            api = start_api(env, log_dir, "api-term-3", port=api.port)
            await resumed_equals_uninterrupted(client, db, job_id, first, reference)
    finally:
        api.stop()


async def test_cancel_during_a_long_silent_tool_call_interrupts_the_tool(env, worker, db, log_dir):
    api = start_api(env, log_dir, "api-cancel")
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            job_id = await submit(client, "hi", tool_sleep_s=TOOL_SLEEP_S)
            reader = asyncio.create_task(follow(client, job_id, reconnect=False))

            async def in_tool():
                return any(p["type"] == "tool_call" for _, _, p in await logged_events(db, job_id))

            await eventually(in_tool, timeout=20, what="the sleep tool call")
            response = await client.post(f"/api/jobs/{job_id}/cancel")
            assert response.json() == {"status": "ok", "job_status": "running"}
            # Half the tool's sleep: a run that waited for its tool to return cannot end in time.
            stream = await asyncio.wait_for(reader, TOOL_SLEEP_S / 2)
            ended = f"job {job_id}: cancelled (attempt 1)"
            await eventually(
                lambda: ended in worker.log(), timeout=10, what="the worker's log of the cancelled attempt"
            )
            assert stream.payloads == [p for _, _, p in await logged_events(db, job_id)]
            assert text_of(stream.payloads) == "Let me wait 60 seconds."
            assert stream.payloads[-2:] == [
                {"type": "tool_call", "tool_name": "sleep", "argument": '{"seconds": 60.0}', "call_id": "call_1"},
                {"type": "done", "status": "cancelled"},
            ]
            job = await job_row(db, job_id)
            assert (job["status"], job["attempt"], job["error"]) == ("cancelled", 1, None)
    finally:
        api.stop()
