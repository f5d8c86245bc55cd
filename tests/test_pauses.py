"""Human in the loop on real processes: runs that pause for a person and continue.

The example desk's ``refunds`` agent (examples/support_desk/approvals.py) has a
tool that needs confirmation (``issue_refund``), one that needs user input
(``schedule_callback``) and one executed outside (``escalate_to_human``); the
offline model calls the tool the prompt names. The module has a database, queue,
worker and APIs of its own, the reaper on (a paused job must be left alone by it),
and a worker with ONE slot: a job that finishes while another is paused proves the
paused one holds no slot.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio

from tests.conftest import create_database, drop_database, service_environment
from tests.faults.support import Stream, await_condition, follow, logged_events, text_of
from tests.support.config import services
from tests.support.processes import ApiServer, ServiceProcess, start_api, start_worker
from tests.support.sse import frames

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALPHA_KEY = "alpha-key-for-pauses"
BETA_KEY = "beta-key-for-pauses"
ALPHA = {"Authorization": f"Bearer {ALPHA_KEY}"}
BETA = {"Authorization": f"Bearer {BETA_KEY}"}
AGENTS = (
    "assistant=runstream.tasks.assistant:build_assistant,"
    "refunds=examples.support_desk.approvals:refunds_agent"
)
REFUND = "please issue_refund 1001"
CALLBACK = "please schedule_callback about my noisy grinder"
ESCALATE = "please escalate_to_human customer wants a manager"


def pause_env(database_url: str, tmp: Path, **settings: str) -> dict[str, str]:
    env = service_environment(database_url, services.redis_url, f"rs-pause-{uuid.uuid4().hex[:10]}", tmp)
    return {
        **env,
        "RUNSTREAM_AGENTS": AGENTS,
        "RUNSTREAM_DEFAULT_AGENT": "refunds",
        "RUNSTREAM_API_KEYS": f"alpha={ALPHA_KEY},beta={BETA_KEY}",
        "RUNSTREAM_WORKER_CONCURRENCY": "1",
        "RUNSTREAM_REAPER_INTERVAL_S": "0.3",
        "RUNSTREAM_STALE_AFTER_S": "1.5",
        "RUNSTREAM_HEARTBEAT_S": "0.3",
        "RUNSTREAM_PENDING_TIMEOUT_S": "1",
        "RUNSTREAM_KEEPALIVE_S": "0.5",
        **settings,
    }


@pytest.fixture(scope="module")
def pause_database() -> Iterator[str]:
    url = create_database("rs_pause")
    yield url
    drop_database(url)


@pytest.fixture(scope="module")
def env(pause_database: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return pause_env(pause_database, tmp_path_factory.mktemp("pause-data"))


@pytest.fixture(scope="module")
def worker(env: dict[str, str], log_dir: Path) -> Iterator[ServiceProcess]:
    process = start_worker(env, log_dir, "pause-worker")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(env: dict[str, str], log_dir: Path, worker: ServiceProcess) -> Iterator[ApiServer]:
    server = start_api(env, log_dir, "pause-api")
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def client(api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=30.0, headers=ALPHA) as http:
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def db(pause_database: str) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(pause_database, autocommit=True) as conn:
        yield conn


async def submit(client: httpx.AsyncClient, message: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/jobs", json={"message": message, **body})
    assert response.status_code == 202, response.text
    return response.json()


async def row(db: psycopg.AsyncConnection, job_id: str) -> dict[str, Any]:
    cur = await db.execute(
        "SELECT status, attempt, attempt_base, last_seq, paused_run IS NOT NULL AS kept, requirements, answers,"
        " paused_s, worker FROM jobs WHERE id = %s",
        [job_id],
    )
    names = [c.name for c in cur.description]
    return dict(zip(names, await cur.fetchone(), strict=True))


async def paused(db: psycopg.AsyncConnection, job_id: str) -> dict[str, Any]:
    async def is_paused() -> dict[str, Any] | None:
        job = await row(db, job_id)
        return job if job["status"] == "paused" else None

    return await await_condition(is_paused, 60, f"job {job_id} paused")


async def finished(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        job = (await client.get(f"/api/jobs/{job_id}")).json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return await await_condition(done, 60, f"job {job_id} finished")


def types(payloads: list[dict[str, Any]]) -> list[str]:
    return [p["type"] for p in payloads]


def one_terminal(payloads: list[dict[str, Any]]) -> None:
    assert types(payloads).count("done") + types(payloads).count("error") == 1
    assert payloads[-1]["type"] in ("done", "error")


async def pause_of(client: httpx.AsyncClient, db: psycopg.AsyncConnection, message: str) -> tuple[str, dict[str, Any]]:
    """A job of ``message`` once paused, and its one outstanding requirement."""
    job_id = (await submit(client, message))["job_id"]
    job = await paused(db, job_id)
    rows = await logged_events(db, uuid.UUID(job_id))
    assert rows[-1][2] == {"type": "input_required", "requirements": job["requirements"]}
    [requirement] = job["requirements"]
    return job_id, requirement


async def continue_(client: httpx.AsyncClient, job_id: str, *answers: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return await client.post(f"/api/jobs/{job_id}/continue", json={"answers": list(answers)}, **kwargs)


async def read_all(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    """The whole stream of a job, on one connection, checked gap-free with one terminal event."""
    stream = await follow(client, uuid.UUID(job_id), reconnect=False)
    assert stream.seqs == list(range(len(stream.seqs)))
    one_terminal(stream.payloads)
    return stream.payloads


@pytest.fixture
def restart_database() -> Iterator[str]:
    url = create_database("rs_pause_restart")
    yield url
    drop_database(url)


async def test_a_pause_survives_restarts_and_continues_from_another_api(
    restart_database: str, log_dir: Path, tmp_path: Path
) -> None:
    env = pause_env(restart_database, tmp_path)
    first_worker = start_worker(env, log_dir, "pause-restart-worker-1")
    first_api = start_api(env, log_dir, "pause-restart-api-1")
    processes = [first_worker, first_api]
    try:
        async with await psycopg.AsyncConnection.connect(restart_database, autocommit=True) as db:
            await restarts_and_continue(env, log_dir, db, first_worker, first_api, processes)
    finally:
        for process in processes:
            process.stop()


async def restarts_and_continue(
    env: dict[str, str], log_dir: Path, db: psycopg.AsyncConnection,
    first_worker: ServiceProcess, first_api: ApiServer, processes: list[ServiceProcess],
) -> None:
    async with httpx.AsyncClient(base_url=first_api.url, timeout=30.0, headers=ALPHA) as first:
        job_id = (await submit(first, REFUND))["job_id"]
        paused_row = await paused(db, job_id)
        # The run's state is on the row.
        assert paused_row["kept"]
        [requirement] = paused_row["requirements"]
        assert requirement["kind"] == "confirmation"
        assert requirement["tool_name"] == "issue_refund"
        assert requirement["tool_args"] == {"order_number": "1001"}
        # A watcher joins while paused: the replay up to input_required, then keep-alives.
        body = ""
        async with first.stream("GET", f"/api/jobs/{job_id}/events") as response:
            async for chunk in response.aiter_text():
                body += chunk
                if '"input_required"' in body and ": keepalive" in body.split('"input_required"', 1)[1]:
                    break
        seen = Stream(events=[(f.id, f.data) for f in frames(body.rsplit("\n\n", 1)[0] + "\n\n")], connections=1)
        assert seen.payloads[-1] == {"type": "input_required", "requirements": [requirement]}
        assert "done" not in types(seen.payloads) and "error" not in types(seen.payloads)
        # The only slot of the only worker is free: another job runs to its end meanwhile.
        other = (await submit(first, "what is 2+3?", agent="assistant"))["job_id"]
        assert (await finished(first, other))["status"] == "completed"

    # Every process goes: the worker and the API. New ones start.
    first_worker.stop()
    first_api.stop()
    second_worker = start_worker(env, log_dir, "pause-restart-worker-2")
    processes.append(second_worker)
    second_api = start_api(env, log_dir, "pause-restart-api-2")
    processes.append(second_api)
    third_api = start_api(env, log_dir, "pause-restart-api-3")
    processes.append(third_api)
    async with httpx.AsyncClient(base_url=second_api.url, timeout=30.0, headers=ALPHA) as watching:
        # The new worker's reaper leaves the pause alone: a job lost on purpose
        # (pending, never dispatched) is found and run by it while the pause waits.
        lost = uuid.uuid4()
        await db.execute(
            "INSERT INTO jobs (id, tenant, message, model, agent) VALUES (%s, 'alpha', 'lost job', 'offline', 'assistant')",
            [lost],
        )
        assert (await finished(watching, str(lost)))["status"] == "completed"
        still = await row(db, job_id)
        assert (still["status"], still["attempt"], still["last_seq"]) == (
            "paused", paused_row["attempt"], paused_row["last_seq"]
        )

        # The watcher resumes on the new API after what it saw; it stays open.
        reader = asyncio.create_task(follow(watching, uuid.UUID(job_id), reconnect=False, stream=seen))
        async with httpx.AsyncClient(base_url=third_api.url, timeout=30.0, headers=ALPHA) as answering:
            response = await continue_(answering, job_id, {"id": requirement["id"], "confirmed": True})
            assert response.status_code == 202, response.text
            assert response.json()["status"] == "pending"
        stream = await asyncio.wait_for(reader, 60)
        final = await finished(watching, job_id)
        metrics = (await watching.get(f"/api/analytics/jobs/{job_id}")).json()

    assert final["status"] == "completed"
    assert stream.connections == 2  # one before the restarts, one after: the rest on one connection
    assert stream.seqs == list(range(len(stream.seqs)))
    one_terminal(stream.payloads)
    assert [p for _, _, p in await logged_events(db, uuid.UUID(job_id))] == stream.payloads
    kinds = types(stream.payloads)
    at = kinds.index("input_required")
    assert kinds[at + 1] == "input_received" and "retry" not in kinds
    assert stream.payloads[at + 1] == {
        "type": "input_received",
        "answers": [{"id": requirement["id"], "kind": "confirmation", "confirmed": True, "note": None}],
    }
    assert {
        "type": "tool_result", "call_id": requirement["call_id"], "output": "refunded order 1001 (espresso machine)"
    } in stream.payloads
    assert text_of(stream.payloads).endswith("The issue_refund tool answered: refunded order 1001 (espresso machine).")
    # The continuation is an attempt of its own, its attempts counted afresh.
    done = await row(db, job_id)
    assert done["attempt"] == paused_row["attempt"] + 1 and done["attempt_base"] == paused_row["attempt"]
    # Analytics: time paused apart from run time.
    assert metrics["paused_s"] > 0 and metrics["paused_s"] == pytest.approx(done["paused_s"])
    cur = await db.execute(
        "SELECT extract(epoch FROM finished_at - started_at)::float8 - paused_s FROM jobs WHERE id = %s", [job_id]
    )
    assert metrics["duration_s"] == pytest.approx((await cur.fetchone())[0])
