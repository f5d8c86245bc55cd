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
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio

from tests.conftest import create_database, drop_database, service_environment
from tests.faults.support import Stream, follow, logged_events, text_of
from tests.support.config import services
from tests.support.processes import ApiServer, ServiceProcess, start_api, start_worker
from tests.support.sse import frames
from tests.support.waiting import eventually
from tests.test_webhooks import Receiver

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALPHA_KEY = "alpha-key-for-pauses"
BETA_KEY = "beta-key-for-pauses"
ALPHA = {"Authorization": f"Bearer {ALPHA_KEY}"}
BETA = {"Authorization": f"Bearer {BETA_KEY}"}
AGENTS = (
    "assistant=runstream.tasks.assistant:build_assistant,"
    "refunds=examples.support_desk.approvals:refunds_agent,"
    "refunds-desk=examples.support_desk.approvals:refunds_desk"
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
        "RUNSTREAM_WEBHOOK_SECRETS": "alpha=whsec_cGF1c2VzLXRlc3Qtd2ViaG9vay1zZWNyZXQtMzJieXRl",
        "RUNSTREAM_WEBHOOK_ALLOW_PRIVATE": "true",
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

    return await eventually(is_paused, timeout=60, what=f"job {job_id} paused")


async def finished(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        job = (await client.get(f"/api/jobs/{job_id}")).json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return await eventually(done, timeout=60, what=f"job {job_id} finished")


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
    env: dict[str, str],
    log_dir: Path,
    db: psycopg.AsyncConnection,
    first_worker: ServiceProcess,
    first_api: ApiServer,
    processes: list[ServiceProcess],
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

    # Every process goes, the hard way (SIGKILL): the worker and the API. New ones start.
    first_worker.kill()
    first_api.kill()
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
            "paused",
            paused_row["attempt"],
            paused_row["last_seq"],
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
        "type": "tool_result",
        "call_id": requirement["call_id"],
        "output": "refunded order 1001 (espresso machine)",
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


async def test_a_rejected_refund_is_not_issued(client: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    job_id, requirement = await pause_of(client, db, REFUND)
    rejection = {"id": requirement["id"], "confirmed": False, "note": "over the refund limit"}
    response = await continue_(client, job_id, rejection)
    assert response.status_code == 202, response.text
    payloads = await read_all(client, job_id)
    assert (await finished(client, job_id))["status"] == "completed"
    # The tool never ran; the model was told why.
    assert "tool_result" not in types(payloads) and "tool_call" not in types(payloads)
    assert payloads[types(payloads).index("input_received")]["answers"] == [{**rejection, "kind": "confirmation"}]
    assert text_of(payloads).endswith("The issue_refund tool answered: over the refund limit.")


async def test_user_input_through_the_stream_token_alone(
    api: ApiServer, client: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    job = await submit(client, CALLBACK)
    job_id = job["job_id"]
    await paused(db, job_id)
    [requirement] = (await client.get(f"/api/jobs/{job_id}")).json()["requirements"]
    assert requirement["kind"] == "user_input"
    assert requirement["tool_args"] == {"reason": "about my noisy grinder"}
    assert requirement["fields"] == [{"name": "phone", "type": "str", "description": "the number to call."}]
    assert job["continue_url"] == f"{api.url}/api/jobs/{job_id}/continue?token={job['stream_token']}"
    async with httpx.AsyncClient(timeout=30.0) as browser:  # no API key: the token opens it
        other = await submit(client, CALLBACK)
        response = await browser.post(
            f"{api.url}/api/jobs/{other['job_id']}/continue",
            params={"token": job["stream_token"]},
            json={"answers": [{"id": requirement["id"], "values": {"phone": "555-0100"}}]},
        )
        assert (response.status_code, response.json()["error"]["code"]) == (401, "invalid_token")
        response = await browser.post(
            job["continue_url"], json={"answers": [{"id": requirement["id"], "values": {"phone": "555-0100"}}]}
        )
        assert response.status_code == 202, response.text
    payloads = await read_all(client, job_id)
    assert {
        "type": "tool_call",
        "tool_name": "schedule_callback",
        "call_id": requirement["call_id"],
        "argument": '{"reason": "about my noisy grinder", "phone": "555-0100"}',
    } in payloads
    assert text_of(payloads).endswith("call back booked to 555-0100 about about my noisy grinder.")
    await client.post(f"/api/jobs/{other['job_id']}/cancel")


async def test_an_external_execution_result_continues_the_run(
    client: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    job_id, requirement = await pause_of(client, db, ESCALATE)
    assert (requirement["kind"], requirement["tool_name"]) == ("external_execution", "escalate_to_human")
    assert requirement["tool_args"] == {"summary": "customer wants a manager"}
    response = await continue_(client, job_id, {"id": requirement["id"], "result": "Maria called them back"})
    assert response.status_code == 202, response.text
    payloads = await read_all(client, job_id)
    assert text_of(payloads).endswith("The escalate_to_human tool answered: Maria called them back.")
    assert (await finished(client, job_id))["status"] == "completed"


async def test_a_team_members_paused_tool_continues_through_the_team(
    client: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    job_id = (await submit(client, "please issue_refund 1002", agent="refunds-desk"))["job_id"]
    [requirement] = (await paused(db, job_id))["requirements"]
    assert (requirement["kind"], requirement["tool_name"], requirement["member"]) == (
        "confirmation",
        "issue_refund",
        "refunds",
    )
    response = await continue_(client, job_id, {"id": requirement["id"], "confirmed": True})
    assert response.status_code == 202, response.text
    payloads = await read_all(client, job_id)
    assert (await finished(client, job_id))["status"] == "completed"
    results = [p for p in payloads if p["type"] == "member_tool_result"]
    assert [(p["member"], p["output"]) for p in results] == [("refunds", "refunded order 1002 (coffee grinder)")]
    assert text_of(payloads).endswith("The issue_refund tool answered: refunded order 1002 (coffee grinder).")


async def test_answers_are_checked_against_the_requirements(
    client: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    job_id, confirm = await pause_of(client, db, REFUND)
    before = await row(db, job_id)
    wrong: list[tuple[Any, int, str, str]] = [
        (b"", 400, "invalid_json", "JSON object"),
        (b"{not json", 400, "invalid_json", "not valid JSON"),
        ({"answers": []}, 422, "invalid_body", "answers"),
        ({"answers": [{"id": confirm["id"], "confirmed": "yes"}]}, 422, "invalid_body", "confirmed"),
        ({"answers": [{"id": "nope", "confirmed": True}]}, 422, "invalid_answers", "no outstanding requirement 'nope'"),
        ({"answers": [{"id": confirm["id"], "result": "done"}]}, 422, "invalid_answers", "asks for confirmation"),
        ({"answers": [{"id": confirm["id"], "confirmed": True}] * 2}, 422, "invalid_answers", "answered twice"),
        ({"answers": [{"id": confirm["id"], "confirmed": True, "extra": 1}]}, 422, "invalid_body", "extra"),
        ({"answers": [{"id": confirm["id"], "confirmed": False, "note": "a\u0000b"}]}, 422, "invalid_body", "NUL"),
    ]
    for body, status, code, words in wrong:
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        response = await client.post(f"/api/jobs/{job_id}/continue", **kwargs)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), (body, response.text)
        assert words in response.json()["error"]["message"], (words, response.text)
    input_job, field = await pause_of(client, db, CALLBACK)
    for values, words in [
        ({}, "missing phone"),
        ({"phone": "1", "email": "x"}, "not asked for: email"),
        ({"phone": 5}, "phone must be a str"),
    ]:
        response = await continue_(client, input_job, {"id": field["id"], "values": values})
        assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_answers")
        assert words in response.json()["error"]["message"]
    response = await continue_(client, input_job, {"id": field["id"], "confirmed": True})
    assert "asks for input" in response.json()["error"]["message"]
    # Nothing changed: still paused, no event, no answers.
    assert await row(db, job_id) == before
    assert (await row(db, input_job))["status"] == "paused"
    for paused_job in (job_id, input_job):
        assert (await client.post(f"/api/jobs/{paused_job}/cancel")).json()["job_status"] == "cancelled"


async def test_two_continues_of_one_pause_exactly_one_wins(
    client: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    job_id, requirement = await pause_of(client, db, REFUND)
    answers = [{"id": requirement["id"], "confirmed": True}, {"id": requirement["id"], "confirmed": False}]
    responses = await asyncio.gather(*(continue_(client, job_id, answer) for answer in answers * 3))
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] + [409] * 5, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["error"] == {"code": "not_paused", "message": response.json()["error"]["message"]}
            assert "only a paused job can be continued" in response.json()["error"]["message"]
    payloads = await read_all(client, job_id)
    assert types(payloads).count("input_received") == 1
    # Continuing a finished job changes nothing either.
    last_seq = (await row(db, job_id))["last_seq"]
    again = await continue_(client, job_id, answers[0])
    assert (again.status_code, again.json()["error"]["code"]) == (409, "not_paused")
    assert "job is completed" in again.json()["error"]["message"]
    assert (await row(db, job_id))["last_seq"] == last_seq


async def test_another_tenant_cannot_see_or_continue_a_pause(
    api: ApiServer, client: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    job_id, requirement = await pause_of(client, db, REFUND)
    async with httpx.AsyncClient(base_url=api.url, timeout=30.0, headers=BETA) as beta:
        response = await continue_(beta, job_id, {"id": requirement["id"], "confirmed": True})
        assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
        response = await continue_(beta, str(uuid.uuid4()), {"id": requirement["id"], "confirmed": True})
        assert response.status_code == 404
    async with httpx.AsyncClient(base_url=api.url, timeout=30.0) as anonymous:
        response = await continue_(anonymous, job_id, {"id": requirement["id"], "confirmed": True})
        assert response.status_code == 401
    assert (await row(db, job_id))["status"] == "paused"
    await client.post(f"/api/jobs/{job_id}/cancel")


async def test_cancel_ends_a_paused_job_at_once(client: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    job_id, requirement = await pause_of(client, db, REFUND)
    reader = asyncio.create_task(follow(client, uuid.UUID(job_id), reconnect=False))
    response = await client.post(f"/api/jobs/{job_id}/cancel")
    assert response.json() == {"status": "ok", "job_status": "cancelled"}
    stream = await asyncio.wait_for(reader, 30)
    assert stream.payloads[-2:] == [
        {"type": "input_required", "requirements": [requirement]},
        {"type": "done", "status": "cancelled"},
    ]
    one_terminal(stream.payloads)
    job = await row(db, job_id)
    assert job["status"] == "cancelled" and job["paused_s"] > 0
    late = await continue_(client, job_id, {"id": requirement["id"], "confirmed": True})
    assert (late.status_code, late.json()["error"]["code"]) == (409, "not_paused")


async def test_an_unanswered_pause_times_out(log_dir: Path, tmp_path: Path) -> None:
    database_url = create_database("rs_pause_timeout")
    env = pause_env(database_url, tmp_path, RUNSTREAM_PAUSE_TIMEOUT_S="1")
    worker = start_worker(env, log_dir, "pause-timeout-worker")
    api = start_api(env, log_dir, "pause-timeout-api")
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30.0, headers=ALPHA) as client:
            job_id = (await submit(client, REFUND))["job_id"]
            payloads = await read_all(client, job_id)
            job = await finished(client, job_id)
    finally:
        api.stop()
        worker.stop()
        drop_database(database_url)
    kinds = types(payloads)
    assert kinds[-2:] == ["input_required", "error"]
    assert payloads[-1] == {"type": "error", "message": "pause timed out"}
    assert (job["status"], job["error"]) == ("failed", "pause timed out")


async def test_a_paused_run_keeps_its_session_and_its_webhook_says_paused(
    client: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        session = f"pause-session-{uuid.uuid4().hex[:8]}"
        first = await submit(client, REFUND, session_id=session, webhook={"url": receiver.url})
        job_id = first["job_id"]
        [requirement] = (await paused(db, job_id))["requirements"]
        # The session is still the paused run's: a new job queues behind it, or is refused.
        second = await submit(client, "what is 6*7?", session_id=session, agent="assistant")
        assert second["queued"] is True
        refused = await client.post("/api/jobs", json={"message": "me too", "session_id": session, "if_busy": "reject"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (409, "session_busy")
        assert (await continue_(client, job_id, {"id": requirement["id"], "confirmed": True})).status_code == 202
        assert (await finished(client, job_id))["status"] == "completed"
        # Once it ends, the queued one runs.
        assert (await finished(client, second["job_id"]))["status"] == "completed"

        async def both_delivered() -> list[str] | None:
            statuses = [json.loads(body)["type"] for _, body in receiver.requests]
            return statuses if len(statuses) >= 2 else None

        assert await eventually(both_delivered, timeout=30, what="two webhook deliveries") == [
            "job.paused",
            "job.completed",
        ]
    finally:
        receiver.stop()
