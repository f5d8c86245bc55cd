"""The tenant-wide transitions stream, the job list's time filters, and the analytics
the console reads (per-job timings, series), against a real API, worker and Postgres."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from runstream.api.hub import EventHub
from runstream.api.transitions import transition_stream
from runstream.core.settings import Settings
from runstream.db import events, jobs
from runstream.db.transitions import last_transition_seq
from tests.support.sse import Frame, complete_body, frames
from tests.support.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

URL = "/api/jobs/transitions"


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


async def read_transitions(
    client: httpx.AsyncClient, until, headers: dict[str, str] | None = None, query: str = "", timeout: float = 60
) -> tuple[int, list[Frame]]:
    """Read the stream until ``until(frames)`` is true; answers the id of its opening
    block and its frames."""
    body = ""
    async with asyncio.timeout(timeout):
        async with client.stream("GET", URL + query, headers=headers, timeout=timeout) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            async for chunk in response.aiter_text():
                body += chunk
                if until(frames(complete_body(body))):
                    break
    opening = body.split("\n\n", 1)[0]
    assert opening.startswith("id: ") and "\n" not in opening, opening
    return int(opening[4:]), frames(complete_body(body))


def of_job(found: list[Frame], job_id: str) -> list[tuple[str | None, str, int]]:
    return [
        (f.data["previous_status"], f.data["status"], f.data["attempt"]) for f in found if f.data["job_id"] == job_id
    ]


async def test_a_run_s_transitions_stream_live_and_resume_exactly(
    client: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    async with asyncio.timeout(60), client.stream("GET", URL, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = response.aiter_text()
        # The opening block comes at once: where the stream starts (live only).
        body = await anext(chunks)
        opening = body.split("\n\n", 1)[0]
        assert opening.startswith("id: ") and "\n" not in opening, opening
        start = int(opening[4:])
        # Another tenant's job moves at the same time: it must never show.
        other = await jobs.create_job(pool, tenant="globex", message="secret", model="offline")
        await jobs.cancel_job(pool, other["id"], "globex")
        job_id = (await client.post("/api/jobs", json={"message": "What is 19+23?"})).json()["job_id"]
        async for chunk in chunks:
            body += chunk
            if ("running", "completed", 1) in of_job(frames(complete_body(body)), job_id):
                break
    found = frames(complete_body(body))
    assert of_job(found, job_id) == [(None, "pending", 0), ("pending", "running", 1), ("running", "completed", 1)]
    assert all(f.id > start for f in found)
    assert [f.id for f in found] == sorted(f.id for f in found)
    assert str(other["id"]) not in {f.data["job_id"] for f in found}
    first = next(f for f in found if f.data["job_id"] == job_id)
    assert first.data["type"] == "transition" and first.data["session_id"] is None
    assert first.data["agent"] == "assistant"
    assert datetime.fromisoformat(first.data["at"]).tzinfo is not None

    # Resumed after the job's first transition: exactly what followed it, with its
    # own opening block naming where it resumed.
    after = [f for f in found if f.id > first.id]
    resumed_at, resumed = await read_transitions(
        client, lambda got: len(got) >= len(after), headers={"Last-Event-ID": str(first.id)}
    )
    assert resumed_at == first.id
    assert resumed[: len(after)] == after
    # The query parameter resumes too; the header wins over it.
    by_query, _ = await read_transitions(client, lambda got: True, query=f"?last_event_id={first.id}")
    assert by_query == first.id
    by_header, _ = await read_transitions(
        client, lambda got: True, headers={"Last-Event-ID": str(start)}, query=f"?last_event_id={first.id}"
    )
    assert by_header == start


async def test_a_resume_point_beyond_the_newest_transition_or_not_a_number_is_a_400(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(URL, headers={"Last-Event-ID": str(2**62)}), 400, "invalid_last_event_id")
    assert_error(await client.get(f"{URL}?last_event_id=abc"), 400, "invalid_last_event_id")


async def test_the_job_list_filters_by_creation_time(http: httpx.AsyncClient) -> None:
    session = f"window-{uuid.uuid4().hex[:8]}"
    ids = []
    for _ in range(3):
        ids.append((await http.post("/api/jobs", json={"message": "hi", "session_id": session})).json()["job_id"])
    listed = (await http.get("/api/jobs", params={"session_id": session})).json()["jobs"]
    created = {j["job_id"]: datetime.fromisoformat(j["created_at"]) for j in listed}
    middle = created[ids[1]]

    async def window(**bounds: datetime) -> list[str]:
        query = {"session_id": session, **{k: v.isoformat() for k, v in bounds.items()}}
        response = await http.get("/api/jobs", params=query)
        assert response.status_code == 200, response.text
        return [j["job_id"] for j in response.json()["jobs"]]

    assert await window(created_after=middle) == [ids[2], ids[1]]
    assert await window(created_before=middle) == [ids[0]]
    assert await window(created_after=middle, created_before=created[ids[2]]) == [ids[1]]
    # No zone: UTC.
    naive = (middle + timedelta(hours=1)).astimezone(UTC).replace(tzinfo=None)
    assert (await http.get("/api/jobs", params={"session_id": session, "created_after": naive.isoformat()})).json()[
        "jobs"
    ] == []
    # A page of one, then the next: the cursor keeps the window.
    page = (
        await http.get("/api/jobs", params={"session_id": session, "created_after": middle.isoformat(), "limit": 1})
    ).json()
    nxt = await http.get(
        "/api/jobs", params={"session_id": session, "created_after": middle.isoformat(), "cursor": page["next_cursor"]}
    )
    assert [j["job_id"] for j in nxt.json()["jobs"]] == [ids[1]] and nxt.json()["next_cursor"] is None
    assert_error(await http.get("/api/jobs", params={"created_after": "yesterday"}), 400, "invalid_created_after")
    assert_error(await http.get("/api/jobs", params={"created_before": "2026-13-01"}), 400, "invalid_created_before")


async def test_per_job_timings_and_the_series(client: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    session = f"series-{uuid.uuid4().hex[:8]}"
    since = datetime.now(UTC) - timedelta(seconds=1)
    done = []
    for offline in ({}, {"fail": "broken on purpose"}):
        job = (
            await client.post(
                "/api/jobs", json={"message": "What is 19+23?", "session_id": session, "metadata": {"offline": offline}}
            )
        ).json()
        done.append(job["job_id"])
    for job_id in done:
        await client.get(f"/api/jobs/{job_id}/events", timeout=60)
    other = await jobs.create_job(pool, tenant="globex", message="secret", model="offline")

    response = await client.get("/api/analytics/jobs", params={"ids": ",".join([*done, str(other["id"])])})
    assert response.status_code == 200, response.text
    timings = {t["job_id"]: t for t in response.json()["jobs"]}
    # The other tenant's job is left out, as if it did not exist.
    assert set(timings) == set(done)
    good, bad = timings[done[0]], timings[done[1]]
    assert (good["outcome"], good["attempts"], bad["outcome"]) == ("completed", 1, "failed")
    assert good["queue_wait_s"] >= 0 and good["ttft_s"] >= good["queue_wait_s"] and good["duration_s"] > 0

    until = datetime.now(UTC) + timedelta(seconds=1)
    query = {"session_id": session, "since": since.isoformat(), "until": until.isoformat(), "interval_s": "1"}
    body = (await client.get("/api/analytics/series", params=query)).json()
    intervals = body["intervals"]
    # Every interval that starts before until, the last one partial.
    assert len(intervals) == math.ceil((until - since).total_seconds())
    assert datetime.fromisoformat(intervals[0]["start"]) == since
    assert sum(i["by_status"]["completed"] for i in intervals) == 1
    assert sum(i["by_status"]["failed"] for i in intervals) == 1
    assert sum(i["jobs"] for i in intervals) == 2
    busy = [i for i in intervals if i["jobs"]]
    assert all(i["duration_s"]["count"] >= 1 and i["duration_s"]["p50"] is not None for i in busy)
    empty = [i for i in intervals if not i["jobs"]]
    assert all(i["duration_s"] == {"count": 0, "p50": None, "p95": None} for i in empty)

    assert_error(await client.get("/api/analytics/series", params={"interval_s": "60"}), 400, "missing_since")
    assert_error(
        await client.get("/api/analytics/series", params={**query, "interval_s": "0"}), 400, "invalid_interval_s"
    )
    long = {"since": "2000-01-01T00:00:00Z", "interval_s": "1"}
    assert_error(await client.get("/api/analytics/series", params=long), 400, "too_many_intervals")
    backwards = {"since": until.isoformat(), "until": since.isoformat(), "interval_s": "1"}
    assert_error(await client.get("/api/analytics/series", params=backwards), 400, "invalid_until")
    assert_error(await client.get("/api/analytics/jobs", params={"ids": "nope"}), 400, "invalid_ids")
    assert_error(await client.get("/api/analytics/jobs"), 400, "invalid_ids")


async def test_every_transition_is_logged_once_in_order_whatever_moves_the_job(pool: AsyncConnectionPool) -> None:
    """Created, claimed, handed back, claimed again, finished: one row each, the
    seqs increasing; heartbeats and appends without a new status log nothing."""
    job = await jobs.create_job(pool, tenant="initech", message="m", model="offline")
    claim = await jobs.claim_job(pool, job["id"], worker="w1", stale_after_s=30)
    await jobs.heartbeat(pool, {job["id"]: claim.attempt})
    await events.append_many(pool, [events.AppendBatch(job["id"], [{"type": "text_delta", "delta": "a"}])])
    await jobs.release_job(pool, job["id"], attempt=claim.attempt, error="model timeout")
    claim = await jobs.claim_job(pool, job["id"], worker="w2", stale_after_s=30)
    await events.append_many(
        pool, [events.AppendBatch(job["id"], [{"type": "done", "status": "completed"}], new_status="completed")]
    )
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT seq, previous_status, status, attempt FROM job_transitions WHERE job_id = %s ORDER BY seq",
            [job["id"]],
        )
        rows = await cur.fetchall()
    assert [(r["previous_status"], r["status"], r["attempt"]) for r in rows] == [
        (None, "pending", 0),
        ("pending", "running", 1),
        ("running", "pending", 1),
        ("pending", "running", 2),
        ("running", "completed", 2),
    ]
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)


async def test_the_stream_gets_every_transition_in_order_through_concurrent_commits_and_a_listen_drop(
    database_url: str, pool: AsyncConnectionPool
) -> None:
    """Writers commit transitions of two tenants at once; a stream with tiny pages
    follows one tenant; then its hub's LISTEN connection is killed and the last
    transitions commit while no connection listens. The stream must get exactly
    that tenant's rows after its start, in seq order, none twice."""
    # No keep-alive within the test: a stream that missed a wake-up would not read again.
    settings = Settings(DATABASE_URL=database_url, replay_page_size=7, listen_ping_s=1.0, keepalive_s=600)
    hub = EventHub(settings, pool, application_name=f"runstream-test-hub-{uuid.uuid4().hex[:8]}")
    await hub.start()
    tenant, other = f"t-{uuid.uuid4().hex[:6]}", f"o-{uuid.uuid4().hex[:6]}"
    start = await last_transition_seq(pool)
    created: list[uuid.UUID] = []

    async def writer(n: int) -> None:
        for _ in range(n):
            for who in (tenant, other):
                job = await jobs.create_job(pool, tenant=who, message="m", model="offline")
                if who == tenant:
                    created.append(job["id"])
                await jobs.cancel_job(pool, job["id"], who)

    got: list[Frame] = []

    async def follow(expected: int) -> None:
        body = ""
        stream = transition_stream(hub, pool, tenant, start)
        try:
            async for chunk in stream:
                body += chunk.decode()
                got[:] = frames(complete_body(body))
                if len(got) >= expected:
                    return
        finally:
            await stream.aclose()

    try:
        await eventually(lambda: hub.listening, what="the transition hub to listen")
        # 4 writers x 10 rounds, then 2 more: 2 transitions per job of the tenant.
        reader = asyncio.create_task(follow(2 * (4 * 10 + 2)))
        await asyncio.gather(*(writer(10) for _ in range(4)))
        async with pool.connection() as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (hub.application_name,),
            )
        # These land while no connection listens: the reconnect's wake-up covers them.
        await writer(2)
        await asyncio.wait_for(reader, 20)
    finally:
        await hub.stop()
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT seq FROM job_transitions WHERE tenant = %s AND seq > %s ORDER BY seq", [tenant, start]
        )
        stored = [r["seq"] for r in await cur.fetchall()]
    assert [f.id for f in got] == stored
    assert len(stored) == 2 * len(created) == 84
    assert [f.data["status"] for f in got].count("cancelled") == len(created)
    assert {f.data["job_id"] for f in got} == {str(j) for j in created}
    assert hub.transition_watchers == {}


async def test_group_commits_ending_runs_of_many_sessions_never_deadlock_with_creations_in_them(
    pool: AsyncConnectionPool,
) -> None:
    """One statement ends the runs of four sessions (each end takes its session's
    lock in the session trigger) while a job is created in each of those sessions
    (session lock first, then the insert): the transition counter, taken at commit,
    must not close a cycle with those locks. Postgres would abort one side with a
    deadlock error."""
    tenant = f"dl-{uuid.uuid4().hex[:6]}"
    done = {"type": "done", "status": "completed"}
    for _ in range(12):
        sessions = [f"s{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
        claims = []
        for session in sessions:
            job = await jobs.create_job(pool, tenant=tenant, message="m", model="offline", session_id=session)
            claims.append(await jobs.claim_job(pool, job["id"], worker="w", stale_after_s=30))
        end = events.append_many(
            pool,
            [events.AppendBatch(c.id, [done], attempt=c.attempt, new_status="completed") for c in claims],
        )
        created = [
            jobs.create_job(pool, tenant=tenant, message="m", model="offline", session_id=s) for s in reversed(sessions)
        ]
        results = await asyncio.gather(end, *created)
        assert all(r.applied for r in results[0])
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed') AS ended, count(*) AS logged"
            " FROM job_transitions WHERE tenant = %s",
            [tenant],
        )
        counts = await cur.fetchone()
    # 48 runs created, claimed and ended, 48 more created: every transition logged.
    assert (counts["ended"], counts["logged"]) == (48, 48 * 3 + 48)
