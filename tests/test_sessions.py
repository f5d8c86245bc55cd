"""One active run per session, and what a job created in a busy session does (if_busy).

The policy tests run the real worker and offline model. A run is kept going
with the offline model's silent tool call (``tool_sleep_s``), and ended early by
the policy under test or by a cancel, so nothing waits on a clock. The races
POST many jobs at once into one idle session; those against the API with no
worker behind it see the exact state Postgres ended in (nothing runs away).
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
from psycopg_pool import AsyncConnectionPool

from tests.support.processes import ApiServer, start_api
from tests.support.sse import deltakit_events, read_stream
from tests.support.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

RECALL = "what did i say before?"
RACERS = 20


@pytest.fixture(scope="module")
def unlimited_api(service_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    """An API with no worker behind it and the tenant limits off. With them on,
    a tenant's creations take one lock in turn, which would serialize the race
    before the session's own lock is reached."""
    env = {
        **service_env,
        "RUNSTREAM_QUEUE": service_env["RUNSTREAM_QUEUE"] + "-idle",
        "RUNSTREAM_JOB_RATE_LIMIT": "0",
        "RUNSTREAM_MAX_ACTIVE_JOBS": "0",
    }
    server = start_api(env, log_dir, name="unlimited-api")
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session", params=["limits on", "limits off"])
async def racing(
    request: pytest.FixtureRequest, http: httpx.AsyncClient, unlimited_api: ApiServer
) -> AsyncIterator[httpx.AsyncClient]:
    """An API with no worker behind it: with the tenant limits on (the default) and off."""
    if request.param == "limits on":
        yield http
        return
    async with httpx.AsyncClient(base_url=unlimited_api.url, timeout=30.0) as client:
        yield client


def new_session() -> str:
    return f"busy-{uuid.uuid4().hex[:12]}"


async def post(
    client: httpx.AsyncClient, session: str, message: str, *, sleep_s: float | None = None, **body: Any
) -> httpx.Response:
    offline = {"tool_sleep_s": sleep_s} if sleep_s is not None else {}
    return await client.post(
        "/api/jobs", json={"message": message, "session_id": session, "metadata": {"offline": offline}, **body}
    )


async def created(client: httpx.AsyncClient, session: str, message: str, **kwargs: Any) -> dict[str, Any]:
    response = await post(client, session, message, **kwargs)
    assert response.status_code == 202, response.text
    return response.json()


async def events_to_end(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    return deltakit_events(await read_stream(client, f"/api/jobs/{job_id}/events"))


def answer(received: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in received if e["type"] == "text_delta")


async def rows(pool: AsyncConnectionPool, session: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, status, attempt, queued_at, interrupted_at, cleared_at, created_at, started_at, finished_at"
            " FROM jobs WHERE session_id = %s ORDER BY created_at, id",
            [session],
        )
        return await cur.fetchall()


async def in_its_tool_call(client: httpx.AsyncClient, job_id: str) -> None:
    """Wait until the run has written its tool call (its text before it too): it
    sits in the silent tool call until stopped."""

    async def tool_call_written() -> bool:
        page = (await client.get(f"/api/jobs/{job_id}/events", headers={"Accept": "application/json"})).json()
        return any(e["data"]["type"] == "tool_call" for e in page["events"])

    await eventually(tool_call_written, timeout=60, what=f"the tool call of job {job_id}")


async def test_enqueue_waits_then_runs_in_order_seeing_the_answers_before(
    client: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    session = new_session()
    first = await created(client, session, "remember the number 7", sleep_s=2)
    second = await created(client, session, RECALL)
    third = await created(client, session, RECALL, if_busy="enqueue")
    assert (first["queued"], second["queued"], third["queued"]) == (False, True, True)
    assert second["status"] == third["status"] == "pending"

    third_events = await events_to_end(client, third["job_id"])
    assert third_events[-1] == {"type": "done", "status": "completed"}
    a, b, c = await rows(pool, session)
    assert [r["status"] for r in (a, b, c)] == ["completed"] * 3
    # One after the other, in order, each once: never two runs of the session at once.
    assert a["finished_at"] <= b["started_at"] and b["finished_at"] <= c["started_at"]
    assert [r["attempt"] for r in (a, b, c)] == [1, 1, 1]
    assert all(r["queued_at"] is None for r in (a, b, c))
    # Each saw the runs before it as history.
    assert answer(await events_to_end(client, second["job_id"])) == 'You said: "remember the number 7"'
    assert answer(third_events) == f'You said: "{RECALL}"'


async def test_reject_answers_409_with_the_active_run_and_creates_nothing(
    client: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    session = new_session()
    active = await created(client, session, "busy for a while", sleep_s=30)
    refused = await post(client, session, "me too", if_busy="reject")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "session_busy"
    assert active["job_id"] in error["message"]
    busy = error["active_job"]
    assert busy["job_id"] == active["job_id"]
    assert busy["status"] in ("pending", "running")
    assert busy["events_url"].startswith(f"{client.base_url}/api/jobs/{active['job_id']}/events?token=")
    assert busy["cancel_url"].startswith(f"{client.base_url}/api/jobs/{active['job_id']}/cancel?token=")
    assert [str(r["id"]) for r in await rows(pool, session)] == [active["job_id"]]

    # The stream URL it hands out works without a key; once the run ends the session takes jobs again.
    await client.post(f"/api/jobs/{active['job_id']}/cancel")
    ended = deltakit_events(await read_stream(client, busy["events_url"]))
    assert ended[-1] == {"type": "done", "status": "cancelled"}
    accepted = await created(client, session, "now?", if_busy="reject")
    assert accepted["queued"] is False
    assert (await events_to_end(client, accepted["job_id"]))[-1] == {"type": "done", "status": "completed"}


async def test_interrupt_cancels_the_active_run_and_keeps_its_partial_answer(
    client: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    session = new_session()
    first = await created(client, session, "first question", sleep_s=30)
    await in_its_tool_call(client, first["job_id"])
    second = await created(client, session, RECALL, if_busy="interrupt")
    assert second["queued"] is True

    first_events = await events_to_end(client, first["job_id"])
    assert first_events[-1] == {"type": "done", "status": "cancelled"}
    second_events = await events_to_end(client, second["job_id"])
    assert second_events[-1] == {"type": "done", "status": "completed"}
    # The interrupted run stays in the conversation: the next one sees its question.
    assert answer(second_events) == 'You said: "first question"'

    a, b = await rows(pool, session)
    assert (a["status"], b["status"]) == ("cancelled", "completed")
    assert a["interrupted_at"] is not None and a["cleared_at"] is None
    assert a["finished_at"] <= b["started_at"]
    status = (await client.get(f"/api/jobs/{first['job_id']}")).json()
    assert (status["status"], status["interrupted"]) == ("cancelled", True)

    history = (await client.get(f"/api/sessions/{session}/messages", params={"format": "deltakit"})).json()
    assert [(r["job_id"], r["status"], r["interrupted"]) for r in history["runs"]] == [
        (first["job_id"], "cancelled", True),
        (second["job_id"], "completed", False),
    ]
    partial = next(m for m in history["messages"] if m["id"] == f"{first['job_id']}-assistant")
    assert partial["interrupted"] is True
    assert {"type": "text", "text": "Let me wait 30 seconds."} in partial["parts"]
    assert not any(m.get("interrupted") for m in history["messages"] if m["job_id"] == second["job_id"])


async def test_rollback_cancels_the_active_run_and_leaves_it_out_of_history(
    client: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    session = new_session()
    zeroth = await created(client, session, "the zeroth message")
    await events_to_end(client, zeroth["job_id"])
    first = await created(client, session, "first question", sleep_s=30)
    await in_its_tool_call(client, first["job_id"])
    second = await created(client, session, RECALL, if_busy="rollback")

    assert (await events_to_end(client, first["job_id"]))[-1] == {"type": "done", "status": "cancelled"}
    second_events = await events_to_end(client, second["job_id"])
    # The rolled-back run is not in the agent's context: the recall skips it.
    assert answer(second_events) == 'You said: "the zeroth message"'
    _, a, _ = await rows(pool, session)
    assert a["status"] == "cancelled" and a["interrupted_at"] is not None and a["cleared_at"] is not None
    history = (await client.get(f"/api/sessions/{session}/messages")).json()
    assert [r["job_id"] for r in history["runs"]] == [zeroth["job_id"], second["job_id"]]
    # Still readable by id (the audit log).
    assert (await client.get(f"/api/jobs/{first['job_id']}")).json()["interrupted"] is True


async def test_interrupting_a_run_not_started_yet_cancels_it_at_once(
    http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    # No worker behind this API: the first job stays pending, never claimed.
    session = new_session()
    first = await created(http, session, "never runs")
    second = await created(http, session, "instead", if_busy="interrupt")
    # Cancelled in the request, so the new job was promoted before the answer.
    assert (second["status"], second["queued"]) == ("pending", False)
    a, b = await rows(pool, session)
    assert (a["status"], a["interrupted_at"] is not None, b["queued_at"]) == ("cancelled", True, None)
    page = (await http.get(f"/api/jobs/{first['job_id']}/events", headers={"Accept": "application/json"})).json()
    assert [e["data"] for e in page["events"]] == [{"type": "done", "status": "cancelled"}]


async def test_race_into_an_idle_session_leaves_one_active_run(
    racing: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    session = new_session()
    answers = await asyncio.gather(*(post(racing, session, f"racer {i}") for i in range(RACERS)))
    assert [a.status_code for a in answers] == [202] * RACERS
    assert sorted(a.json()["queued"] for a in answers) == [False] + [True] * (RACERS - 1)
    jobs = await rows(pool, session)
    assert len(jobs) == RACERS and all(j["status"] == "pending" for j in jobs)
    [active] = [j for j in jobs if j["queued_at"] is None]
    # The one that won holds the session; the others queue behind it in arrival order.
    assert active["id"] == jobs[0]["id"]
    assert [j["queued_at"] for j in jobs[1:]] == sorted(j["queued_at"] for j in jobs[1:])

    # Cancelling the active one hands the session to the next in line, and only to it.
    await racing.post(f"/api/jobs/{active['id']}/cancel")
    after = await rows(pool, session)
    assert [j["id"] for j in after if j["status"] == "pending" and j["queued_at"] is None] == [jobs[1]["id"]]
    # Cancelling a queued job changes nothing for the others.
    await racing.post(f"/api/jobs/{jobs[5]['id']}/cancel")
    after = await rows(pool, session)
    assert [j["id"] for j in after if j["status"] == "pending" and j["queued_at"] is None] == [jobs[1]["id"]]
    assert sum(j["status"] == "cancelled" for j in after) == 2


async def test_reject_race_creates_exactly_one_job(racing: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    session = new_session()
    answers = await asyncio.gather(*(post(racing, session, f"racer {i}", if_busy="reject") for i in range(RACERS)))
    accepted = [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code == 409]
    assert (len(accepted), len(refused)) == (1, RACERS - 1)
    winner = accepted[0].json()["job_id"]
    assert {r.json()["error"]["active_job"]["job_id"] for r in refused} == {winner}
    assert [str(j["id"]) for j in await rows(pool, session)] == [winner]


async def test_enqueue_race_with_a_worker_runs_one_at_a_time(
    client: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    session = new_session()
    answers = await asyncio.gather(*(post(client, session, f"racer {i}") for i in range(RACERS)))
    assert [a.status_code for a in answers] == [202] * RACERS
    last = max((a.json() for a in answers), key=lambda job: job["created_at"])
    await events_to_end(client, last["job_id"])
    jobs = await rows(pool, session)
    assert [j["status"] for j in jobs] == ["completed"] * RACERS
    assert all(j["attempt"] == 1 for j in jobs)
    # In creation order, and never overlapping.
    for before, after in zip(jobs, jobs[1:], strict=False):
        assert before["finished_at"] <= after["started_at"]


async def test_jobs_without_a_session_are_not_queued(http: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(*(http.post("/api/jobs", json={"message": "free"}) for _ in range(5)))
    assert [a.json()["queued"] for a in answers] == [False] * 5


async def test_postgres_refuses_a_second_active_run_in_a_session(pool: AsyncConnectionPool) -> None:
    session = new_session()
    insert = "INSERT INTO jobs (id, tenant, session_id, message, model) VALUES (%s, 'default', %s, 'x', 'offline')"
    async with pool.connection() as conn:
        await conn.execute(insert, [uuid.uuid4(), session])
        with pytest.raises(psycopg.errors.UniqueViolation):
            await conn.execute(insert, [uuid.uuid4(), session])


async def test_if_busy_must_be_a_known_policy(http: httpx.AsyncClient) -> None:
    response = await post(http, new_session(), "x", if_busy="wait")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_body"
    assert response.json()["error"]["message"].startswith("if_busy:")
