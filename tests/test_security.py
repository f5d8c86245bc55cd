"""Security controls against real API processes with API keys configured:
authentication, stream tokens, tenant isolation, limits, CORS, hostile input,
and what the logs keep. Every refusal is checked for its exact status and JSON
error, and that nothing was written."""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from tests.support.processes import RUNSTREAM, ApiServer, ServiceProcess, free_port, http_ok, start_api
from tests.support.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALPHA_KEY = "rs-alpha-" + uuid.uuid4().hex
ALPHA_KEY_2 = "rs-alpha2-" + uuid.uuid4().hex  # a second key of the same tenant (rotation)
BETA_KEY = "rs-beta-" + uuid.uuid4().hex
SECRET = "rs-secret-" + uuid.uuid4().hex
METRICS_TOKEN = "rs-metrics-" + uuid.uuid4().hex
ORIGIN = "https://app.example.com"

ALPHA = {"Authorization": f"Bearer {ALPHA_KEY}"}
BETA = {"Authorization": f"Bearer {BETA_KEY}"}

# The limits API: tiny limits, one tenant per limit so they do not interfere.
LIMIT_KEYS = {t: f"rs-{t}-{uuid.uuid4().hex}" for t in ("rate", "busy", "other", "s1", "s2", "exp")}


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {LIMIT_KEYS[tenant]}"}


def idle(env: dict[str, str]) -> dict[str, str]:
    """No worker consumes this queue: jobs stay pending."""
    return {**env, "RUNSTREAM_QUEUE": env["RUNSTREAM_QUEUE"] + "-security-idle"}


@pytest.fixture(scope="module")
def keyed_env(service_env: dict[str, str]) -> dict[str, str]:
    return {
        **idle(service_env),
        "RUNSTREAM_API_KEYS": f"alpha={ALPHA_KEY}, beta={BETA_KEY}, alpha={ALPHA_KEY_2}",
        "RUNSTREAM_SECRET": SECRET,
    }


@pytest.fixture(scope="module")
def keyed_api(keyed_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    server = start_api(keyed_env, log_dir, name="keyed-api")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limits_api(service_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    env = {
        **idle(service_env),
        "RUNSTREAM_API_KEYS": ",".join(f"{t}={k}" for t, k in LIMIT_KEYS.items()),
        "RUNSTREAM_JOB_RATE_LIMIT": "4",
        "RUNSTREAM_JOB_RATE_WINDOW_S": "60",
        "RUNSTREAM_MAX_ACTIVE_JOBS": "2",
        "RUNSTREAM_MAX_STREAMS": "3",
        "RUNSTREAM_MAX_STREAMS_PER_TENANT": "2",
        "RUNSTREAM_KEEPALIVE_S": "0.2",
        "RUNSTREAM_STREAM_TOKEN_TTL_S": "1",
        "RUNSTREAM_CORS_ORIGINS": ORIGIN,
        "RUNSTREAM_METRICS_TOKEN": METRICS_TOKEN,
    }
    server = start_api(env, log_dir, name="limits-api")
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def keyed(keyed_api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=keyed_api.url, timeout=30.0) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def limited(limits_api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limits_api.url, timeout=30.0) as client:
        yield client


async def rows(pool: AsyncConnectionPool, tenant: str) -> tuple[int, int]:
    """(jobs, events) of a tenant: what a refused request must not have changed."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM jobs WHERE tenant = %(t)s) AS jobs,"
            " (SELECT count(*) FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE j.tenant = %(t)s) AS events",
            {"t": tenant},
        )
        row = await cur.fetchone()
        return row["jobs"], row["events"]


async def total_jobs(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM jobs")
        return (await cur.fetchone())["n"]


async def job_status(pool: AsyncConnectionPool, job_id: str) -> str:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,))
        return (await cur.fetchone())["status"]


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


async def create(client: httpx.AsyncClient, headers: dict[str, str], **body) -> dict:
    response = await client.post("/api/jobs", json={"message": "hello", **body}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


async def stream_status(client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> int:
    """Open an events stream, take its status, and hang up."""
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
        return response.status_code


# --- authentication ---------------------------------------------------------------


async def test_every_api_route_needs_a_key(keyed: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    job = await create(keyed, ALPHA)
    before = await total_jobs(pool)
    job_id = job["job_id"]
    requests = [
        ("GET", "/api/jobs"),
        ("POST", "/api/jobs"),
        ("GET", f"/api/jobs/{job_id}"),
        ("POST", f"/api/jobs/{job_id}/cancel"),
        ("GET", f"/api/jobs/{job_id}/events"),
        ("GET", "/api/sessions/s/messages"),
        ("POST", "/api/sessions/s/clear"),
        ("GET", "/api/analytics/summary"),
        ("GET", f"/api/analytics/jobs/{job_id}"),
        # Unknown routes too: a caller without a key learns nothing of the route table.
        ("GET", "/api/nothing-here"),
        ("DELETE", "/api/jobs"),
    ]
    for method, path in requests:
        response = await keyed.request(method, path, json={"message": "x"} if method == "POST" else None)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert await total_jobs(pool) == before
    assert await job_status(pool, job_id) == "pending"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Bearer wrong-key", "invalid_api_key"),
        (f"Bearer {ALPHA_KEY}x", "invalid_api_key"),
        (f"Bearer {ALPHA_KEY[:-1]}", "invalid_api_key"),
        (f"Basic {ALPHA_KEY}", "invalid_api_key"),
        ("Bearer", "invalid_api_key"),
        (f"Token {ALPHA_KEY}", "invalid_api_key"),
        (ALPHA_KEY, "invalid_api_key"),
    ],
)
async def test_a_wrong_key_is_401(keyed: httpx.AsyncClient, pool: AsyncConnectionPool, header: str, code: str) -> None:
    before = await rows(pool, "alpha")
    response = await keyed.post("/api/jobs", json={"message": "x"}, headers={"Authorization": header})
    assert_error(response, 401, code)
    assert await rows(pool, "alpha") == before


async def test_open_paths_need_no_key(keyed: httpx.AsyncClient) -> None:
    assert (await keyed.get("/healthz")).json() == {"status": "ok"}
    document = (await keyed.get("/api/openapi.json")).json()
    assert document["openapi"].startswith("3.")


async def test_keys_of_one_tenant_share_its_jobs(keyed: httpx.AsyncClient) -> None:
    job = await create(keyed, ALPHA)
    other_key = {"Authorization": f"bearer {ALPHA_KEY_2}"}  # the scheme is case-insensitive
    response = await keyed.get(f"/api/jobs/{job['job_id']}", headers=other_key)
    assert response.status_code == 200
    assert response.json()["job_id"] == job["job_id"]


# --- tenant isolation ---------------------------------------------------------------


async def test_another_tenants_job_is_404_everywhere(keyed: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    session = f"s-{uuid.uuid4().hex}"
    job = await create(keyed, ALPHA, session_id=session)
    job_id = job["job_id"]
    before = await rows(pool, "alpha")

    assert_error(await keyed.get(f"/api/jobs/{job_id}", headers=BETA), 404, "not_found")
    assert_error(await keyed.get(f"/api/jobs/{job_id}/events", headers=BETA), 404, "not_found")
    page = await keyed.get(f"/api/jobs/{job_id}/events", headers={**BETA, "Accept": "application/json"})
    assert_error(page, 404, "not_found")
    assert_error(await keyed.post(f"/api/jobs/{job_id}/cancel", headers=BETA), 404, "not_found")
    assert_error(await keyed.get(f"/api/analytics/jobs/{job_id}", headers=BETA), 404, "not_found")
    # Beta's list, even filtered on alpha's session, does not have it.
    listed = await keyed.get("/api/jobs", params={"session_id": session}, headers=BETA)
    assert listed.json() == {"jobs": [], "next_cursor": None}
    assert job_id not in {j["job_id"] for j in (await keyed.get("/api/jobs", headers=BETA)).json()["jobs"]}
    # History of alpha's session, asked by beta, is exactly that of a session that does not exist.
    theirs = await keyed.get(f"/api/sessions/{session}/messages", headers=BETA)
    nobody = await keyed.get(f"/api/sessions/{session}-none/messages", headers=BETA)
    assert theirs.status_code == nobody.status_code == 200
    assert theirs.json()["messages"] == nobody.json()["messages"] == []
    assert theirs.json()["runs"] == []
    cleared = await keyed.post(f"/api/sessions/{session}/clear", headers=BETA)
    assert cleared.json() == {"status": "ok", "cleared_runs": 0}

    assert await rows(pool, "alpha") == before
    assert await job_status(pool, job_id) == "pending"
    # Alpha still sees all of it.
    assert (await keyed.get(f"/api/jobs/{job_id}", headers=ALPHA)).status_code == 200
    mine = await keyed.get(f"/api/sessions/{session}/messages", headers=ALPHA)
    assert [run["job_id"] for run in mine.json()["runs"]] == [job_id]


# --- stream tokens --------------------------------------------------------------------


async def test_create_returns_a_stream_token_and_ready_urls(keyed: httpx.AsyncClient) -> None:
    job = await create(keyed, ALPHA)
    token = job["stream_token"]
    # Absolute, so a browser app on another origin uses them as they are.
    base = str(keyed.base_url).rstrip("/")
    assert job["events_url"] == f"{base}/api/jobs/{job['job_id']}/events?token={token}"
    assert job["cancel_url"] == f"{base}/api/jobs/{job['job_id']}/cancel?token={token}"
    assert ALPHA_KEY not in token and SECRET not in token
    status = (await keyed.get(f"/api/jobs/{job['job_id']}", headers=ALPHA)).json()
    assert status["stream_token"]  # a fresh one, for a client whose first one expired


async def test_urls_follow_a_trusted_proxy_and_ignore_an_untrusted_one(
    keyed: httpx.AsyncClient, keyed_env: dict[str, str], log_dir: Path
) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example.com", "X-Forwarded-Prefix": "/agents"}
    # Untrusted (the default): the headers change nothing.
    job = await create(keyed, {**ALPHA, **forwarded})
    assert job["events_url"].startswith(f"{str(keyed.base_url).rstrip('/')}/api/jobs/{job['job_id']}/events?token=")
    proxied = start_api({**keyed_env, "RUNSTREAM_TRUST_PROXY_HEADERS": "true"}, log_dir, name="proxied-api")
    try:
        async with httpx.AsyncClient(base_url=proxied.url, timeout=30.0) as client:
            job = await create(client, {**ALPHA, **forwarded})
            token = job["stream_token"]
            assert job["events_url"] == f"https://chat.example.com/agents/api/jobs/{job['job_id']}/events?token={token}"
            assert job["cancel_url"] == f"https://chat.example.com/agents/api/jobs/{job['job_id']}/cancel?token={token}"
            # The first of a proxy chain's values is the client's; an odd scheme is ignored.
            chained = {**ALPHA, "X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "a.example, b.internal"}
            job = await create(client, chained)
            assert job["cancel_url"].startswith(f"http://a.example/api/jobs/{job['job_id']}/cancel?token=")
    finally:
        proxied.stop()


async def test_a_token_opens_its_jobs_events_and_cancel_without_headers(
    keyed: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    job = await create(keyed, ALPHA)
    assert await stream_status(keyed, job["events_url"]) == 200
    # DeltaKit's stop(): a bare POST.
    response = await keyed.post(job["cancel_url"])
    assert response.json() == {"status": "ok", "job_status": "cancelled"}
    # The job is over: the stream replays the terminal event and ends.
    body = (await keyed.get(job["events_url"])).text
    assert body == 'id: 0\ndata: {"type": "done", "status": "cancelled"}\n\n'


async def test_a_token_for_one_job_opens_no_other(keyed: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    x = await create(keyed, ALPHA)
    y = await create(keyed, ALPHA)
    token = {"token": x["stream_token"]}
    before = await rows(pool, "alpha")
    assert_error(await keyed.get(f"/api/jobs/{y['job_id']}/events", params=token), 401, "invalid_token")
    assert_error(await keyed.post(f"/api/jobs/{y['job_id']}/cancel", params=token), 401, "invalid_token")
    # Nor any other route of its own job, nor the API at large.
    for method, path in [
        ("GET", f"/api/jobs/{x['job_id']}"),
        ("GET", "/api/jobs"),
        ("POST", "/api/jobs"),
        ("GET", f"/api/analytics/jobs/{x['job_id']}"),
    ]:
        response = await keyed.request(method, path, params=token, json={"message": "m"} if method == "POST" else None)
        assert_error(response, 401, "invalid_token")
    assert await rows(pool, "alpha") == before
    assert await job_status(pool, y["job_id"]) == "pending"


def tampered(token: str) -> list[str]:
    expiry, tenant, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    beta = base64.urlsafe_b64encode(b"beta").decode().rstrip("=")
    return [
        f"{expiry}.{tenant}.{flipped}",  # signature changed
        f"{int(expiry) + 3600}.{tenant}.{signature}",  # expiry extended
        f"{expiry}.{beta}.{signature}",  # tenant swapped
        f"{expiry}.{tenant}.{signature}!",  # a character outside base64url
        f"{expiry}.{tenant}",
        "",
        "x" * 4_000,  # over the token limit, within the URL limit
        f"{expiry}.{tenant}.{signature}.{signature}",
    ]


async def test_a_tampered_token_is_rejected(keyed: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    job = await create(keyed, ALPHA)
    before = await rows(pool, "alpha")
    for bad in tampered(job["stream_token"]):
        params = {"token": bad}
        assert_error(await keyed.get(f"/api/jobs/{job['job_id']}/events", params=params), 401, "invalid_token")
        assert_error(await keyed.post(f"/api/jobs/{job['job_id']}/cancel", params=params), 401, "invalid_token")
    assert await rows(pool, "alpha") == before
    assert await job_status(pool, job["job_id"]) == "pending"


async def test_a_key_in_the_header_wins_over_a_token(keyed: httpx.AsyncClient) -> None:
    job = await create(keyed, ALPHA)
    # A valid token does not rescue a wrong key: the header is checked when present.
    response = await keyed.get(job["events_url"], headers={"Authorization": "Bearer wrong"})
    assert_error(response, 401, "invalid_api_key")
    # Beta's key on alpha's job, token or not: still 404.
    assert_error(await keyed.post(job["cancel_url"], headers=BETA), 404, "not_found")


async def test_a_token_expires(limited: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    job = await create(limited, auth("exp"))
    # This API's tokens live 1 s from their issue, which was before now.
    expires_at = datetime.fromisoformat(job["stream_token_expires_at"])
    assert expires_at <= datetime.now(UTC) + timedelta(seconds=1)
    await eventually(lambda: datetime.now(UTC) > expires_at, what=f"the stream token's expiry, {expires_at}")
    assert_error(await limited.get(job["events_url"]), 401, "token_expired")
    assert_error(await limited.post(job["cancel_url"]), 401, "token_expired")
    assert await job_status(pool, job["job_id"]) == "pending"


async def test_a_token_works_on_every_process_that_shares_the_secret(
    keyed: httpx.AsyncClient, keyed_env: dict[str, str], log_dir: Path
) -> None:
    job = await create(keyed, ALPHA)
    second = start_api(keyed_env, log_dir, name="keyed-api-2")
    try:
        async with httpx.AsyncClient(base_url=second.url, timeout=30.0) as other:
            # The URL's path and token, sent to the second process.
            cancel = httpx.URL(job["cancel_url"])
            response = await other.post(cancel.path, params=cancel.params)
            assert response.json() == {"status": "ok", "job_status": "cancelled"}
    finally:
        second.stop()


async def test_without_a_secret_every_process_and_a_restart_accept_the_token(
    keyed_env: dict[str, str], log_dir: Path, pool: AsyncConnectionPool
) -> None:
    """No RUNSTREAM_SECRET: the key is the deployment's, kept in Postgres."""
    env = {name: value for name, value in keyed_env.items() if name != "RUNSTREAM_SECRET"}
    first = start_api(env, log_dir, name="unset-secret-api-1")
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=30.0) as client:
            job = await create(client, ALPHA)
    finally:
        first.stop()
    # The process that issued it is gone; another starts, with nothing set up.
    second = start_api(env, log_dir, name="unset-secret-api-2")
    try:
        async with httpx.AsyncClient(base_url=second.url, timeout=30.0) as other:
            events = httpx.URL(job["events_url"])
            assert await stream_status(other, f"{events.path}?{events.query.decode()}") == 200
            cancel = httpx.URL(job["cancel_url"])
            response = await other.post(cancel.path, params=cancel.params)
            assert response.json() == {"status": "ok", "job_status": "cancelled"}
    finally:
        second.stop()
    async with pool.connection() as conn:
        count = await (await conn.execute("SELECT count(*) AS n FROM stream_secrets")).fetchone()
    assert count["n"] == 1


# --- limits -----------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_declared_or_not(
    keyed: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    before = await rows(pool, "alpha")
    big = b'{"message": "' + b"x" * 1_100_000 + b'"}'
    assert_error(await keyed.post("/api/jobs", content=big, headers=ALPHA), 413, "body_too_large")

    async def chunked():  # no Content-Length: counted as it is read
        yield big[:600_000]
        yield big[600_000:]

    assert_error(await keyed.post("/api/jobs", content=chunked(), headers=ALPHA), 413, "body_too_large")
    assert await rows(pool, "alpha") == before


async def test_a_message_over_the_limit_is_422(keyed: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    before = await rows(pool, "alpha")
    response = await keyed.post("/api/jobs", json={"message": "x" * 1_000_000}, headers=ALPHA)
    body = assert_error(response, 422, "message_too_long")
    assert body["error"]["message"] == "message has 1000000 characters, the most allowed is 100000"
    assert await rows(pool, "alpha") == before
    # At the limit exactly, it is taken.
    assert (await keyed.post("/api/jobs", json={"message": "x" * 100_000}, headers=ALPHA)).status_code == 202


async def test_job_creation_is_rate_limited_per_tenant(limited: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    for _ in range(4):  # the rate limit; each is cancelled, so the active limit stays out of it
        job = await create(limited, auth("rate"))
        await limited.post(f"/api/jobs/{job['job_id']}/cancel", headers=auth("rate"))
    before = await rows(pool, "rate")
    response = await limited.post("/api/jobs", json={"message": "one too many"}, headers=auth("rate"))
    body = assert_error(response, 429, "rate_limited")
    assert body["error"]["message"] == "this tenant created 4 jobs in the last 60s, the most allowed"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert await rows(pool, "rate") == before
    # Another tenant is not held back by it.
    await create(limited, auth("other"))


async def test_active_jobs_are_limited_per_tenant(limited: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    first = await create(limited, auth("busy"))
    await create(limited, auth("busy"))  # two pending: the limit
    before = await rows(pool, "busy")
    response = await limited.post("/api/jobs", json={"message": "a third"}, headers=auth("busy"))
    assert_error(response, 429, "too_many_active_jobs")
    assert response.headers["retry-after"] == "5"
    assert await rows(pool, "busy") == before
    # When one ends, there is room again.
    await limited.post(f"/api/jobs/{first['job_id']}/cancel", headers=auth("busy"))
    await create(limited, auth("busy"))


async def test_open_streams_are_limited_per_tenant_and_per_process(limited: httpx.AsyncClient) -> None:
    # Pending jobs, and they stay so: their streams stay open.
    s1 = f"/api/jobs/{(await create(limited, auth('s1')))['job_id']}/events"
    s2 = f"/api/jobs/{(await create(limited, auth('s2')))['job_id']}/events"
    async with (
        limited.stream("GET", s1, headers=auth("s1")) as a,
        limited.stream("GET", s1, headers=auth("s1")) as b,
    ):
        assert a.status_code == b.status_code == 200
        third = await limited.get(s1, headers=auth("s1"))
        body = assert_error(third, 429, "too_many_streams")
        assert body["error"]["message"] == "this tenant has 2 streams open, the most allowed"
        assert third.headers["retry-after"] == "5"
        async with limited.stream("GET", s2, headers=auth("s2")) as c:
            assert c.status_code == 200
            full = await limited.get(s2, headers=auth("s2"))
            body = assert_error(full, 429, "too_many_streams")
            assert body["error"]["message"] == "this server has 3 streams open, the most it serves"

    # Hung up: the slots come back (the server notices at its next keep-alive, 0.2 s here).
    async def slot_free() -> bool:
        return await stream_status(limited, s1, headers=auth("s1")) == 200

    await eventually(slot_free, interval=0.2, what="a stream slot of tenant s1 to come back")


# --- CORS ---------------------------------------------------------------------------------


async def test_cors_answers_only_configured_origins(limited: httpx.AsyncClient, keyed: httpx.AsyncClient) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = await limited.options("/api/jobs", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers

    refused = await limited.options("/api/jobs", headers={"Origin": "https://evil.example", **preflight})
    assert_error(refused, 400, "cors_refused")
    assert "access-control-allow-origin" not in refused.headers

    # An answer to an allowed origin carries the header, a 401 too (so the page can read it).
    unauthorized = await limited.get("/api/jobs", headers={"Origin": ORIGIN})
    assert_error(unauthorized, 401, "unauthorized")
    assert unauthorized.headers["access-control-allow-origin"] == ORIGIN
    other = await limited.get("/api/jobs", headers={"Origin": "https://evil.example", **auth("s1")})
    assert "access-control-allow-origin" not in other.headers
    # With no origins configured, no cross-origin call is allowed at all.
    none = await keyed.get("/api/jobs", headers={"Origin": ORIGIN, **ALPHA})
    assert "access-control-allow-origin" not in none.headers


# --- metrics and open mode ------------------------------------------------------------------


async def test_metrics_need_the_metrics_token_when_one_is_set(limited: httpx.AsyncClient) -> None:
    assert_error(await limited.get("/metrics"), 401, "invalid_metrics_token")
    assert_error(await limited.get("/metrics", headers=auth("s1")), 401, "invalid_metrics_token")
    response = await limited.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200


async def test_open_mode_says_so_loudly(idle_api: ApiServer) -> None:
    assert "RUNSTREAM IS RUNNING OPEN" in idle_api.log()
    assert "RUNSTREAM_SECRET is not set" in idle_api.log()


async def test_open_mode_refuses_a_public_bind(service_env: dict[str, str], log_dir: Path) -> None:
    env = idle(service_env)
    refused = subprocess.run(
        [RUNSTREAM, "api", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "refusing to serve the API open" in refused.stderr
    assert "RUNSTREAM_ALLOW_OPEN=1" in refused.stderr

    port = str(free_port())
    allowed = ServiceProcess(
        "open-public-api", ["api", "--host", "0.0.0.0", "--port", port], {**env, "RUNSTREAM_ALLOW_OPEN": "1"}, log_dir
    ).start()
    try:
        allowed.wait_until(http_ok(f"http://127.0.0.1:{port}/healthz"))
        assert "RUNSTREAM IS RUNNING OPEN" in allowed.log()
    finally:
        allowed.stop()


# --- hostile input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"message": "a\\u0000b"}', 422, "invalid_body"),
        (b'{"message": "ok", "session_id": "s\\u0000"}', 422, "invalid_body"),
        (b'{"message": "ok", "metadata": {"k\\u0000": 1}}', 422, "invalid_body"),
        (b'{"message": "ok", "metadata": {"a": ["\\u0000"]}}', 422, "invalid_body"),
        (b'{"message": "ok", "metadata": {"a": NaN}}', 422, "invalid_body"),
        (b'{"message": "ok", "metadata": {"a": Infinity}}', 422, "invalid_body"),
        (b'{"message": "ok", "metadata": {"a": 1e999}}', 422, "invalid_body"),
        (b'{"message": "\\ud800"}', 400, "invalid_json"),
        (b'{"message": "\\udc00x"}', 400, "invalid_json"),
        (b'{"message": "a\x00b"}', 400, "invalid_json"),
        (b'{"message": "\xff\xfe"}', 400, "invalid_json"),
        (b'{"message": "ok", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "invalid_json"),
        (b'{"message": "ok", "metadata": {"n": 1' + b"0" * 5000 + b"}}", 400, "invalid_json"),
        (b'{"message": "ok", "session_id": "' + b"s" * 257 + b'"}', 422, "invalid_body"),
    ],
)
async def test_hostile_bodies_are_4xx_and_write_nothing(
    keyed: httpx.AsyncClient, pool: AsyncConnectionPool, body: bytes, status: int, code: str
) -> None:
    before = await rows(pool, "alpha")
    response = await keyed.post("/api/jobs", content=body, headers={**ALPHA, "Content-Type": "application/json"})
    assert_error(response, status, code)
    assert await rows(pool, "alpha") == before


async def test_a_megabyte_of_odd_text_is_stored_as_sent(keyed: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    odd = 'ü\u2028\u2029\U0001f600"\\</script>\r\n' * 20_000  # about 1 MB of UTF-8
    response = await keyed.post("/api/jobs", json={"message": "m", "metadata": {"note": odd}}, headers=ALPHA)
    assert response.status_code == 202
    job = (await keyed.get(f"/api/jobs/{response.json()['job_id']}", headers=ALPHA)).json()
    assert job["metadata"] == {"note": odd}


@pytest.mark.parametrize(
    "value",
    [b"9" * 10_000, b"-2", b"1e3", b"0x10", b"1 2", b"\xb2", b"+1", b"99999999999999999999", b"-", b"\xef\xbc\x99"],
)
async def test_odd_last_event_ids_are_400(keyed: httpx.AsyncClient, value: bytes) -> None:
    job = await create(keyed, ALPHA)
    response = await keyed.get(f"/api/jobs/{job['job_id']}/events", headers={**ALPHA, "Last-Event-ID": value})
    assert_error(response, 400, "invalid_last_event_id")
    # An event id past the job's newest is refused too, whatever its size.
    response = await keyed.get(f"/api/jobs/{job['job_id']}/events", headers={**ALPHA, "Last-Event-ID": "5"})
    assert_error(response, 400, "invalid_last_event_id")


@pytest.mark.parametrize(
    "path",
    [
        "/api/jobs?session_id=a%00b",
        "/api/jobs/%00",
        "/api/sessions/a%00b/messages",
        "/api/analytics/summary?session_id=%00",
    ],
)
async def test_nul_in_the_url_is_400(keyed: httpx.AsyncClient, path: str) -> None:
    assert_error(await keyed.get(path, headers=ALPHA), 400, "invalid_url")


# --- logs -------------------------------------------------------------------------------------


async def test_keys_tokens_and_the_secret_never_reach_the_log(keyed: httpx.AsyncClient, keyed_api: ApiServer) -> None:
    job = await create(keyed, ALPHA)
    await stream_status(keyed, job["events_url"])
    await keyed.post(job["cancel_url"])
    await keyed.get("/api/jobs", headers={"Authorization": f"Bearer {ALPHA_KEY}-wrong"})
    await keyed.get(f"/api/jobs/{job['job_id']}/events", params={"token": job["stream_token"] + "x"})
    log = keyed_api.log()
    assert "token=REDACTED" in log  # the access log did write those requests
    for secret in (ALPHA_KEY, ALPHA_KEY_2, BETA_KEY, SECRET, job["stream_token"]):
        assert secret not in log
    assert job["stream_token"].split(".")[2] not in log
