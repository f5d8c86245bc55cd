"""Runstream mounted under /agents in a FastAPI application with its own routes,
served by a real uvicorn process with a real worker behind it: every URL
Runstream hands out carries the prefix, streams resume through it, and the
stream tokens of header-less clients work there."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from runstream.dev import http_ok
from tests.support.processes import ServiceProcess, free_port
from tests.support.sse import complete_body, frames, read_stream

KEY = "rs-host-" + uuid.uuid4().hex
KEYED = {"Authorization": f"Bearer {KEY}"}
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def host_url(service_env: dict[str, str], log_dir: Path, worker: ServiceProcess) -> Iterator[str]:
    port = free_port()
    env = {**service_env, "RUNSTREAM_API_KEYS": f"acme={KEY}", "PYTHONPATH": str(REPO_ROOT)}
    # The host's own server: uvicorn serving its app, not `runstream api`.
    uvicorn = ["-m", "uvicorn", "tests.support.host_app:app", "--port", str(port)]
    host = ServiceProcess("host-app", uvicorn, env, log_dir, program=sys.executable).start()
    url = f"http://127.0.0.1:{port}"
    host.wait_until(http_ok(f"{url}/agents/healthz"))
    yield url
    host.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def host(host_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=host_url, timeout=30.0) as client:
        yield client


async def test_the_host_keeps_its_own_routes(host: httpx.AsyncClient) -> None:
    assert (await host.get("/hello")).json() == {"from": "host"}
    # The lifespan ran: the mounted app reaches the database and the broker.
    ready = await host.get("/agents/readyz")
    assert ready.status_code == 200, ready.text


async def test_a_job_runs_and_resumes_through_the_mount(host: httpx.AsyncClient, host_url: str) -> None:
    created = await host.post(
        "/agents/api/jobs", json={"message": "hi", "metadata": {"offline": {"words": 30}}}, headers=KEYED
    )
    assert created.status_code == 202, created.text
    job = created.json()
    job_id = job["job_id"]
    base = f"{host_url}/agents/api/jobs/{job_id}"
    assert job["events_url"] == f"{base}/events?token={job['stream_token']}"
    assert job["cancel_url"] == f"{base}/cancel?token={job['stream_token']}"

    # The browser's way: the events URL as handed out, no header; it drops
    # after three events and resumes with Last-Event-ID.
    first = frames(complete_body(await read_stream(host, job["events_url"], stop_after=3)))
    assert [f.id for f in first[:3]] == [0, 1, 2]
    rest = frames(await read_stream(host, job["events_url"], headers={"Last-Event-ID": str(first[2].id)}))
    resumed = first[:3] + rest
    assert [f.id for f in resumed] == list(range(len(resumed)))
    assert resumed[-1].data == {"type": "done", "status": "completed"}
    assert sum(1 for f in resumed if f.data["type"] in ("done", "error")) == 1

    # The whole log again, with the key, matches what the two halves made.
    replay = frames(await read_stream(host, f"/agents/api/jobs/{job_id}/events", headers=KEYED))
    assert replay == resumed

    status = (await host.get(f"/agents/api/jobs/{job_id}", headers=KEYED)).json()
    assert status["status"] == "completed"
    assert status["events_url"].startswith(f"{base}/events?token=")


async def test_the_recipe_alias_hands_out_mounted_urls(host: httpx.AsyncClient, host_url: str) -> None:
    alias = "/agents/api/chat-agno-background-task"
    created = await host.post(f"{alias}/jobs", json={"message": "hello"}, headers=KEYED)
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["events_url"].startswith(f"{host_url}/agents/api/jobs/{job['job_id']}/events?token=")
    streamed = frames(await read_stream(host, f"{alias}/jobs/{job['job_id']}/events", headers=KEYED))
    assert streamed[-1].data == {"type": "done", "status": "completed"}
    # Stopping through the token, as DeltaKit's stop() does (the job is done: a no-op).
    stopped = await host.post(job["cancel_url"])
    assert stopped.json() == {"status": "ok", "job_status": "completed"}
    history = (await host.get(f"{alias}/", headers=KEYED)).json()
    assert any(message.get("content") == "hello" for message in history)


async def test_a_token_opens_only_its_job_under_the_mount(host: httpx.AsyncClient) -> None:
    one = (await host.post("/agents/api/jobs", json={"message": "a"}, headers=KEYED)).json()
    two = (await host.post("/agents/api/jobs", json={"message": "b"}, headers=KEYED)).json()
    foreign = one["events_url"].replace(one["job_id"], two["job_id"])
    response = await host.get(foreign)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_token"
    assert (await host.get("/agents/api/jobs")).json()["error"]["code"] == "unauthorized"


async def test_the_chat_page_loads_its_files_under_the_mount(host: httpx.AsyncClient) -> None:
    page = await host.get("/agents/")
    assert page.status_code == 200
    assert 'src="static/app.js"' in page.text and 'href="static/style.css"' in page.text
    script = await host.get("/agents/static/app.js")
    assert script.status_code == 200 and 'const API = "api";' in script.text
