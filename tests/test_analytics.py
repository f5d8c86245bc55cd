"""Analytics numbers against values computed by hand from seeded jobs.

The jobs are written with SQL, every timestamp explicit, in a session of their
own in 2001, so nothing else in the shared test database falls in their scope.
"""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from runstream.db.status import Status
from tests.support.processes import RUNSTREAM

pytestmark = pytest.mark.asyncio(loop_scope="session")

T0 = datetime(2001, 1, 1, tzinfo=UTC)


def at(minute: int, second: float) -> datetime:
    return T0 + timedelta(minutes=minute, seconds=second)


# (status, attempt, created, started, finished, [(attempt, at-second, payload), ...]); times are seconds after `created`.
JOBS: dict[str, tuple[str, int, int, float | None, float | None, list[tuple[int, float, dict[str, Any]]]]] = {
    # queue 1, ttft 2, duration 4; one good calculate call; 12 text characters.
    "A": (
        "completed",
        1,
        0,
        1,
        5,
        [
            (1, 1.5, {"type": "reasoning", "text": "hmm"}),
            (1, 2.0, {"type": "text_delta", "delta": "Hello "}),
            (1, 2.5, {"type": "text_delta", "delta": "world"}),
            (
                1,
                3.0,
                {
                    "type": "tool_call",
                    "tool_name": "calculate",
                    "argument": '{"expression": "2+3"}',
                    "call_id": "call_1",
                },
            ),
            (1, 3.5, {"type": "tool_result", "call_id": "call_1", "output": "5"}),
            (1, 4.0, {"type": "text_delta", "delta": "!"}),
            (1, 5.0, {"type": "done", "status": "completed"}),
        ],
    ),
    # Retried: queue 3, ttft 4 (attempt 1's text counts: the user saw it), duration 10.
    # Attempt 2's call_1 answers "error: ...": a tool error. Attempt 1's call_1 is another call.
    "B": (
        "failed",
        2,
        1,
        3,
        13,
        [
            (1, 4.0, {"type": "text_delta", "delta": "x"}),
            (2, 10.0, {"type": "retry", "attempt": 2, "reason": "model timeout"}),
            (
                2,
                11.0,
                {
                    "type": "tool_call",
                    "tool_name": "calculate",
                    "argument": '{"expression": "1/0"}',
                    "call_id": "call_1",
                },
            ),
            (2, 12.0, {"type": "tool_result", "call_id": "call_1", "output": "error: division by zero"}),
            (2, 13.0, {"type": "error", "message": "gave up"}),
        ],
    ),
    # Cancelled inside its sleep tool: the call never answered, so it is an error. No text: no ttft.
    "C": (
        "cancelled",
        1,
        2,
        2,
        6,
        [
            (1, 3.0, {"type": "tool_call", "tool_name": "sleep", "argument": '{"seconds": 30}', "call_id": "call_1"}),
            (1, 6.0, {"type": "done", "status": "cancelled"}),
        ],
    ),
    # Never started.
    "D": ("pending", 0, 3, None, None, []),
    # queue 5, ttft 6, duration 3.
    "E": (
        "completed",
        1,
        4,
        5,
        8,
        [
            (1, 6.0, {"type": "text_delta", "delta": "ok"}),
            (1, 7.0, {"type": "done", "status": "completed"}),
        ],
    ),
}


async def seed(pool: AsyncConnectionPool, session_id: str, jobs: dict = JOBS) -> dict[str, uuid.UUID]:
    ids = {}
    async with pool.connection() as conn, conn.transaction():
        for name, (status, attempt, minute, started, finished, events) in jobs.items():
            job_id = ids[name] = uuid.uuid4()
            await conn.execute(
                "INSERT INTO jobs (id, tenant, session_id, message, model, status, attempt, last_seq,"
                " created_at, started_at, finished_at) VALUES (%s, 'default', %s, %s, 'offline', %s, %s, %s, %s, %s, %s)",
                (
                    job_id,
                    session_id,
                    f"job {name}",
                    status,
                    attempt,
                    len(events) - 1,
                    at(minute, 0),
                    None if started is None else at(minute, started),
                    None if finished is None else at(minute, finished),
                ),
            )
            for seq, (event_attempt, second, payload) in enumerate(events):
                await conn.execute(
                    "INSERT INTO job_events (job_id, seq, attempt, type, payload, created_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (job_id, seq, event_attempt, payload["type"], Jsonb(payload), at(minute, second)),
                )
    return ids


@pytest.fixture(scope="module")
def session_id() -> str:
    return f"analytics-{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(pool: AsyncConnectionPool, session_id: str) -> dict[str, uuid.UUID]:
    return await seed(pool, session_id)


async def test_summary_equals_the_hand_computed_figures(
    http: httpx.AsyncClient, seeded: dict[str, uuid.UUID], session_id: str
) -> None:
    response = await http.get("/api/analytics/summary", params={"session_id": session_id})
    assert response.status_code == 200
    body = response.json()
    assert body["jobs"] == 5
    assert body["by_status"] == {"pending": 1, "running": 0, "paused": 0, "completed": 2, "failed": 1, "cancelled": 1}
    assert (body["retried_jobs"], body["retry_rate"]) == (1, 0.2)
    # Queue waits 1, 3, 2, 5 → sorted 1 2 3 5: p50 = 2.5; p95 at rank 2.85 = 3 + 0.85·2.
    assert body["queue_wait_s"] == {"count": 4, "p50": 2.5, "p95": pytest.approx(4.7, abs=1e-9)}
    # First tokens at 2, 4, 6 (C never wrote text): p50 = 4; p95 at rank 1.9 = 4 + 0.9·2.
    assert body["ttft_s"] == {"count": 3, "p50": 4.0, "p95": pytest.approx(5.8, abs=1e-9)}
    # Durations 4, 10, 4, 3 → 3 4 4 10: p50 = 4; p95 at rank 2.85 = 4 + 0.85·6.
    assert body["duration_s"] == {"count": 4, "p50": 4.0, "p95": pytest.approx(9.1, abs=1e-9)}
    assert body["tools"] == [
        {"tool_name": "calculate", "calls": 2, "errors": 1, "error_rate": 0.5},
        {"tool_name": "sleep", "calls": 1, "errors": 1, "error_rate": 1.0},
    ]


async def test_the_time_window_bounds_jobs_by_creation(
    http: httpx.AsyncClient, seeded: dict[str, uuid.UUID], session_id: str
) -> None:
    # [00:01, 00:03) holds B and C only. A zone-less instant is UTC.
    response = await http.get(
        "/api/analytics/summary",
        params={"session_id": session_id, "since": "2001-01-01T00:01:00", "until": "2001-01-01T00:03:00+00:00"},
    )
    body = response.json()
    assert (body["since"], body["until"]) == ("2001-01-01T00:01:00+00:00", "2001-01-01T00:03:00+00:00")
    assert body["by_status"] == {"pending": 0, "running": 0, "paused": 0, "completed": 0, "failed": 1, "cancelled": 1}
    assert body["duration_s"] == {"count": 2, "p50": 7.0, "p95": pytest.approx(9.7, abs=1e-9)}
    assert [(t["tool_name"], t["calls"], t["errors"]) for t in body["tools"]] == [("calculate", 1, 1), ("sleep", 1, 1)]
    bad = await http.get("/api/analytics/summary", params={"since": "yesterday"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_since")
    empty = (await http.get("/api/analytics/summary", params={"session_id": "no-such-session"})).json()
    assert (empty["jobs"], empty["retry_rate"], empty["ttft_s"], empty["tools"]) == (
        0,
        None,
        {"count": 0, "p50": None, "p95": None},
        [],
    )


def counts(**by_status: int) -> dict[str, int]:
    """A ``by_status``: every status, in the enum's order, 0 unless given."""
    return {status: by_status.get(status, 0) for status in Status}


async def test_the_series_counts_every_status_per_interval_as_the_summary_does(
    http: httpx.AsyncClient, pool: AsyncConnectionPool, seeded: dict[str, uuid.UUID], session_id: str
) -> None:
    # One seeded job a minute (A to E), and a paused one in a session of its own.
    window = {"since": "2001-01-01T00:00:00Z", "until": "2001-01-01T00:06:00Z", "interval_s": "60"}
    body = (await http.get("/api/analytics/series", params={**window, "session_id": session_id})).json()
    assert [(i["start"], i["jobs"], i["by_status"], i["retried_jobs"]) for i in body["intervals"]] == [
        ("2001-01-01T00:00:00+00:00", 1, counts(completed=1), 0),
        ("2001-01-01T00:01:00+00:00", 1, counts(failed=1), 1),
        ("2001-01-01T00:02:00+00:00", 1, counts(cancelled=1), 0),
        ("2001-01-01T00:03:00+00:00", 1, counts(pending=1), 0),
        ("2001-01-01T00:04:00+00:00", 1, counts(completed=1), 0),
        ("2001-01-01T00:05:00+00:00", 0, counts(), 0),
    ]
    summary = (await http.get("/api/analytics/summary", params={"session_id": session_id})).json()
    # The same keys in the same order: one SQL fragment counts both.
    assert all(list(i["by_status"]) == list(summary["by_status"]) for i in body["intervals"])
    assert {s: sum(i["by_status"][s] for i in body["intervals"]) for s in Status} == summary["by_status"]

    waiting = f"{session_id}-paused"
    await seed(pool, waiting, {"P": ("paused", 1, 1, 0.5, None, [])})
    paused = (await http.get("/api/analytics/series", params={**window, "session_id": waiting})).json()
    assert [i["by_status"] for i in paused["intervals"]][:2] == [counts(), counts(paused=1)]
    summary = (await http.get("/api/analytics/summary", params={"session_id": waiting})).json()
    assert summary["by_status"] == counts(paused=1)


async def test_per_job_metrics(http: httpx.AsyncClient, seeded: dict[str, uuid.UUID]) -> None:
    a = (await http.get(f"/api/analytics/jobs/{seeded['A']}")).json()
    assert a == {
        "job_id": str(seeded["A"]),
        "session_id": a["session_id"],
        "agent": None,
        "outcome": "completed",
        "attempts": 1,
        "queue_wait_s": 1.0,
        "ttft_s": 2.0,
        "duration_s": 4.0,
        "paused_s": 0.0,
        "events": 7,
        "events_by_type": {"reasoning": 1, "text_delta": 3, "tool_call": 1, "tool_result": 1, "done": 1},
        "text_chars": 12,
        "tool_calls": 1,
        "retries": 0,
    }
    b = (await http.get(f"/api/analytics/jobs/{seeded['B']}")).json()
    assert (b["outcome"], b["attempts"], b["retries"], b["ttft_s"], b["duration_s"], b["text_chars"]) == (
        "failed",
        2,
        1,
        4.0,
        10.0,
        1,
    )
    assert b["events_by_type"] == {"text_delta": 1, "retry": 1, "tool_call": 1, "tool_result": 1, "error": 1}
    d = (await http.get(f"/api/analytics/jobs/{seeded['D']}")).json()
    assert (d["queue_wait_s"], d["ttft_s"], d["duration_s"], d["events"], d["events_by_type"]) == (
        None,
        None,
        None,
        0,
        {},
    )
    assert (await http.get(f"/api/analytics/jobs/{uuid.uuid4()}")).status_code == 404


async def test_runstream_stats_prints_the_same_figures(
    seeded: dict[str, uuid.UUID], session_id: str, service_env: dict[str, str]
) -> None:
    result = subprocess.run(
        [RUNSTREAM, "stats", "--session-id", session_id],
        env={**service_env, "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.replace("│", " ").replace("┃", " ").split()) for line in result.stdout.splitlines()]
    # pending running paused completed failed cancelled total retried "retry rate"
    assert "1 0 0 2 1 1 5 1 20.0%" in lines
    assert "queue wait 4 2.500 4.700" in lines
    assert "time to first token 3 4.000 5.800" in lines
    assert "duration 4 4.000 9.100" in lines
    assert "calculate 2 1 50.0%" in lines
    assert "sleep 1 1 100.0%" in lines
    # The seeded jobs name no agent (as jobs from before agents were recorded).
    assert "(none recorded) 5 2 1 1 4.000" in lines
