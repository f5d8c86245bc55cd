"""The job routes over HTTP: create, status, cancel, list, and JSON errors everywhere."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.routing import Route

from runstream.api.errors import EXCEPTION_HANDLERS
from runstream.core.broker import TASK_NAME
from runstream.db import events, jobs
from tests.support.processes import start_api

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def count(pool: AsyncConnectionPool, table: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")  # noqa: S608 - fixed table names
        return (await cur.fetchone())["n"]


async def pending_job(pool: AsyncConnectionPool, **fields) -> uuid.UUID:
    """A job row that was never dispatched, so it stays pending whatever workers run."""
    job = await jobs.create_job(pool, tenant="default", message="test", model="offline", **fields)
    return job.id


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)


async def test_healthz(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_create_job_commits_the_row_and_answers_202_pending(http, pool) -> None:
    response = await http.post(
        "/api/jobs", json={"message": "hello", "session_id": "s-create", "metadata": {"offline": {"words": 3}}}
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert body["session_id"] == "s-create"
    assert body["metadata"] == {"offline": {"words": 3}}
    assert body["last_event_id"] == -1
    row = await jobs.get_job(pool, uuid.UUID(body["job_id"]), "default")
    assert row is not None and row.message == "hello"

    status = await http.get(f"/api/jobs/{body['job_id']}")
    assert status.status_code == 200
    for key in ("job_id", "status", "created_at", "started_at", "finished_at", "error", "attempt", "last_event_id"):
        assert key in status.json()


async def test_create_job_ignores_unknown_fields(http) -> None:
    response = await http.post("/api/jobs", json={"message": "hi", "extra": [1, 2]})
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"{not json", 400),
        (b"[]", 422),
        (b'"message"', 422),
        (b"{}", 422),
        (b'{"message": null}', 422),
        (b'{"message": 42}', 422),
        (b'{"message": ["a"]}', 422),
        (b'{"message": ""}', 422),
        (b'{"message": "   "}', 422),
        (b'{"message": "hi", "session_id": 7}', 422),
        (b'{"message": "hi", "metadata": "x"}', 422),
    ],
)
async def test_bad_bodies_are_rejected_and_write_nothing(http, pool, body: bytes, status: int) -> None:
    before = await count(pool, "jobs")
    response = await http.post("/api/jobs", content=body, headers={"content-type": "application/json"})
    assert_error(response, status, "invalid_json" if status == 400 else "invalid_body")
    assert await count(pool, "jobs") == before


async def test_unknown_and_malformed_job_ids_are_404(http) -> None:
    for job_id in (str(uuid.uuid4()), "nope", "123", "%20"):
        assert_error(await http.get(f"/api/jobs/{job_id}"), 404, "not_found")
        assert_error(await http.post(f"/api/jobs/{job_id}/cancel"), 404, "not_found")
        assert_error(await http.get(f"/api/jobs/{job_id}/events"), 404, "not_found")


async def test_unknown_routes_and_methods_answer_json(http) -> None:
    assert_error(await http.get("/nowhere"), 404, "not_found")
    assert_error(await http.get("/api/jobs/a/b/c"), 404, "not_found")
    response = await http.delete("/api/jobs")
    assert_error(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "POST"}
    assert_error(await http.get(f"/api/jobs/{uuid.uuid4()}/cancel"), 405, "method_not_allowed")


async def test_an_unexpected_exception_is_a_json_500_without_a_trace() -> None:
    async def boom(request):
        raise RuntimeError("secret detail")

    app = Starlette(routes=[Route("/boom", boom)], exception_handlers=EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal error"}}
    assert "secret" not in response.text


# --- cancel --------------------------------------------------------------------------


async def test_cancel_a_pending_job_at_once_and_idempotently(http, pool) -> None:
    job_id = await pending_job(pool)
    first = await http.post(f"/api/jobs/{job_id}/cancel")
    assert first.status_code == 200
    assert first.json() == {"status": "ok", "job_status": "cancelled"}
    again = await http.post(f"/api/jobs/{job_id}/cancel")
    assert again.json() == {"status": "ok", "job_status": "cancelled"}
    # One terminal event, whatever the number of cancels; the stream replays it and ends.
    rows = await events.read_events(pool, job_id, -1, 100)
    assert [(r.seq, r.data) for r in rows] == [(0, '{"type": "done", "status": "cancelled"}')]
    stream = await http.get(f"/api/jobs/{job_id}/events")
    assert stream.text == 'id: 0\ndata: {"type": "done", "status": "cancelled"}\n\n'
    status = (await http.get(f"/api/jobs/{job_id}")).json()
    assert status["status"] == "cancelled"
    assert status["finished_at"] is not None


async def test_cancel_a_running_job_asks_its_worker(http, pool) -> None:
    job_id = await pending_job(pool)
    assert await jobs.claim_job(pool, job_id, worker="test", stale_after_s=3600)
    for _ in range(2):
        response = await http.post(f"/api/jobs/{job_id}/cancel")
        assert response.json() == {"status": "ok", "job_status": "running"}
    status = (await http.get(f"/api/jobs/{job_id}")).json()
    assert status["status"] == "running"
    assert status["cancel_requested"] is True
    # The worker, not the API, writes the terminal event of a running job.
    assert await events.read_events(pool, job_id, -1, 100) == []


async def test_cancel_a_finished_job_changes_nothing(http, pool) -> None:
    job_id = await pending_job(pool)
    assert await jobs.claim_job(pool, job_id, worker="test", stale_after_s=3600)
    await events.append_events(pool, job_id, [{"type": "done", "status": "completed"}], new_status="completed")
    response = await http.post(f"/api/jobs/{job_id}/cancel")
    assert response.json() == {"status": "ok", "job_status": "completed"}


# --- list ----------------------------------------------------------------------------


async def test_list_pages_newest_first_with_filters(http, pool) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    created = [await pending_job(pool, session_id=session) for _ in range(5)]
    await http.post(f"/api/jobs/{created[1]}/cancel")

    seen, cursor = [], None
    while True:
        params = {"session_id": session, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/api/jobs", params=params)).json()
        assert len(page["jobs"]) <= 2
        seen += [job["job_id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(job_id) for job_id in reversed(created)]

    cancelled = (await http.get("/api/jobs", params={"session_id": session, "status": "cancelled"})).json()
    assert [job["job_id"] for job in cancelled["jobs"]] == [str(created[1])]
    assert cancelled["next_cursor"] is None


async def test_list_without_filters_is_newest_first(http, pool) -> None:
    newest = await pending_job(pool)
    page = (await http.get("/api/jobs", params={"limit": 1})).json()
    assert [job["job_id"] for job in page["jobs"]] == [str(newest)]
    assert page["next_cursor"] is not None


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("limit=abc", "invalid_limit"),
        ("limit=-1", "invalid_limit"),
        ("status=done", "invalid_status"),
        ("cursor=garbage", "invalid_cursor"),
        ("cursor=WzEsMl0", "invalid_cursor"),  # base64 of [1,2]
    ],
)
async def test_list_rejects_bad_parameters(http, query: str, code: str) -> None:
    assert_error(await http.get(f"/api/jobs?{query}"), 400, code)


async def test_a_deeply_nested_cursor_is_a_400_and_leaves_no_traceback(http, idle_api) -> None:
    nested = ("[" * 1100 + "]" * 1100).encode()
    cursor = base64.urlsafe_b64encode(nested).decode().rstrip("=")
    assert_error(await http.get("/api/jobs", params={"cursor": cursor}), 400, "invalid_cursor")
    assert "RecursionError" not in idle_api.log()
    assert "Traceback" not in idle_api.log()


# --- dispatch ------------------------------------------------------------------------


async def test_unreachable_broker_still_answers_202_and_the_job_stays_pending(
    service_env: dict[str, str], log_dir: Path, pool
) -> None:
    env = {**service_env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "RUNSTREAM_DISPATCH_TIMEOUT_S": "1"}
    server = start_api(env, log_dir, name="api-no-broker")
    try:
        # The dispatch gives up (refused, or at its 1 s deadline): the answer comes well
        # within the client's timeout, not after the broker client's own retries.
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
            response = await client.post("/api/jobs", json={"message": "hi"})
    finally:
        server.stop()
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    job_id = response.json()["job_id"]
    job = await jobs.get_job(pool, uuid.UUID(job_id), "default")
    assert (job.status, job.attempt) == ("pending", 0)
    # One attempt, given up: the job is the reaper's now.
    assert server.log().count(f"dispatch of {TASK_NAME} {job_id} failed, it stays pending for the reaper") == 1
    assert "Traceback" not in server.log()
