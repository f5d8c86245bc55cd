"""Pluggable authentication against real API processes: the JWT authenticator
(HS256 served; RS256 checked in-process with real keys), a custom authenticator
from a test module, the user id on jobs, and stream tokens for header-less
clients. Every refusal is checked for its exact status and JSON error, and that
nothing was written."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from runstream.api.auth import Unauthorized
from runstream.api.jwt_auth import JwtAuthenticator
from runstream.api.tenancy import Principal
from runstream.core.settings import Settings, SettingsError, get_settings
from runstream.db.jobs import claim_job
from tests.support.processes import RUNSTREAM, ApiServer, start_api
from tests.support.sse import deltakit_events, read_stream

JWT_KEY = "rs-jwt-" + uuid.uuid4().hex + uuid.uuid4().hex
AUDIENCE = "runstream-tests"
REPO_ROOT = Path(__file__).resolve().parent.parent


def token(claims: dict[str, Any], key: str = JWT_KEY, algorithm: str = "HS256", **headers: Any) -> str:
    """A token with the usual claims, ``claims`` over them (None: leave that claim out)."""
    base = {"sub": "ada", "tenant": "acme", "aud": AUDIENCE, "exp": int(time.time()) + 600}
    payload = {name: value for name, value in {**base, **claims}.items() if value is not None}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers or None)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code, body
    return body


def idle(env: dict[str, str], name: str) -> dict[str, str]:
    """No worker consumes this queue: jobs stay pending."""
    return {**env, "RUNSTREAM_QUEUE": f"{env['RUNSTREAM_QUEUE']}-{name}-idle"}


@pytest.fixture(scope="module")
def jwt_api(service_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    env = {
        **idle(service_env, "jwt"),
        "RUNSTREAM_AUTH": "runstream.api.jwt_auth:JwtAuthenticator",
        "RUNSTREAM_JWT_KEY": JWT_KEY,
        "RUNSTREAM_JWT_AUDIENCE": AUDIENCE,
        "RUNSTREAM_JWT_LEEWAY_S": "0",
    }
    server = start_api(env, log_dir, name="jwt-api")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def custom_api(service_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    env = {
        **idle(service_env, "custom"),
        "RUNSTREAM_AUTH": "tests.support.custom_auth:authenticate",
        # The host application's modules are importable where the API runs.
        "PYTHONPATH": str(REPO_ROOT),
    }
    server = start_api(env, log_dir, name="custom-auth-api")
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def jwt_client(jwt_api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=jwt_api.url, timeout=30.0) as client:
        yield client


async def job_count(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM jobs")
        return (await cur.fetchone())["n"]


async def test_a_valid_jwt_acts_for_its_tenant_and_user(
    jwt_client: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    created = await jwt_client.post("/api/jobs", json={"message": "hello"}, headers=bearer(token({})))
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["user_id"] == "ada"
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT tenant, user_id FROM jobs WHERE id = %s", (job["job_id"],))
        assert await cur.fetchone() == {"tenant": "acme", "user_id": "ada"}

    # The worker gets the user with the job it claims.
    claim = await claim_job(pool, uuid.UUID(job["job_id"]), worker="test-auth", stale_after_s=30)
    assert claim is not None and claim.job.user_id == "ada" and claim.job.tenant == "acme"

    status = await jwt_client.get(f"/api/jobs/{job['job_id']}", headers=bearer(token({})))
    assert status.status_code == 200 and status.json()["user_id"] == "ada"


async def test_the_job_list_filters_by_user(jwt_client: httpx.AsyncClient) -> None:
    tenant = f"list-{uuid.uuid4().hex[:8]}"
    made: dict[str, list[str]] = {"ada": [], "bob": []}
    for user in ("ada", "bob", "ada"):
        response = await jwt_client.post(
            "/api/jobs", json={"message": "m"}, headers=bearer(token({"tenant": tenant, "sub": user}))
        )
        made[user].append(response.json()["job_id"])
    as_bob = bearer(token({"tenant": tenant, "sub": "bob"}))
    ada = (await jwt_client.get("/api/jobs", params={"user_id": "ada"}, headers=as_bob)).json()["jobs"]
    assert [j["job_id"] for j in ada] == made["ada"][::-1]
    assert {j["user_id"] for j in ada} == {"ada"}
    everyone = (await jwt_client.get("/api/jobs", headers=as_bob)).json()["jobs"]
    assert len(everyone) == 3
    nobody = (await jwt_client.get("/api/jobs", params={"user_id": "carol"}, headers=as_bob)).json()
    assert nobody == {"jobs": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("credential", "code", "message"),
    [
        (lambda: token({"exp": int(time.time()) - 60}), "token_expired", "the token has expired"),
        (lambda: token({"aud": "another-service"}), "invalid_token", "the token is not for this audience"),
        (lambda: token({}, key="not-the-key-" + "x" * 32), "invalid_token", "the token's signature is not valid"),
        (
            lambda: token({"tenant": None}),
            "invalid_token",
            "the token has no usable 'tenant' claim (a non-empty string)",
        ),
        (lambda: token({"tenant": ""}), "invalid_token", "the token has no usable 'tenant' claim (a non-empty string)"),
        (lambda: token({"sub": None}), "invalid_token", "the token has no 'sub' claim"),
        (lambda: token({"exp": None}), "invalid_token", "the token has no 'exp' claim"),
        (lambda: token({"aud": None}), "invalid_token", "the token has no 'aud' claim"),
        (lambda: "not.a.jwt", "invalid_token", "the token is not a valid JWT for this API"),
        # A token may not choose how it is checked.
        (
            lambda: jwt.encode({"sub": "ada", "tenant": "acme", "aud": AUDIENCE, "exp": 2**40}, JWT_KEY, "HS512"),
            "invalid_token",
            "the token is not a valid JWT for this API",
        ),
    ],
    ids=[
        "expired",
        "wrong-audience",
        "bad-signature",
        "no-tenant",
        "empty-tenant",
        "no-sub",
        "no-exp",
        "no-aud",
        "garbage",
        "other-algorithm",
    ],
)
async def test_a_bad_jwt_is_a_401_and_writes_nothing(
    jwt_client: httpx.AsyncClient, pool: AsyncConnectionPool, credential: Any, code: str, message: str
) -> None:
    value = credential()
    before = await job_count(pool)
    response = await jwt_client.post("/api/jobs", json={"message": "hello"}, headers=bearer(value))
    body = assert_error(response, 401, code)
    assert body["error"]["message"] == message
    assert response.headers["www-authenticate"] == "Bearer"
    assert await job_count(pool) == before


async def test_no_credential_or_a_malformed_header_is_a_401(jwt_client: httpx.AsyncClient) -> None:
    assert_error(await jwt_client.get("/api/jobs"), 401, "unauthorized")
    assert_error(await jwt_client.get("/api/jobs", headers={"Authorization": "Basic abc"}), 401, "invalid_token")


async def test_another_tenants_job_is_a_404(jwt_client: httpx.AsyncClient) -> None:
    job = (await jwt_client.post("/api/jobs", json={"message": "mine"}, headers=bearer(token({})))).json()
    other = bearer(token({"tenant": "globex", "sub": "ada"}))
    for response in (
        await jwt_client.get(f"/api/jobs/{job['job_id']}", headers=other),
        await jwt_client.post(f"/api/jobs/{job['job_id']}/cancel", headers=other),
        await jwt_client.get(f"/api/jobs/{job['job_id']}/events", headers=other),
    ):
        assert_error(response, 404, "not_found")
    listed = (await jwt_client.get("/api/jobs", headers=other)).json()["jobs"]
    assert job["job_id"] not in {j["job_id"] for j in listed}
    # Untouched by the other tenant's cancel.
    again = await jwt_client.get(f"/api/jobs/{job['job_id']}", headers=bearer(token({})))
    assert again.json()["status"] == "pending" and again.json()["cancel_requested"] is False


async def test_stream_tokens_serve_header_less_clients(jwt_client: httpx.AsyncClient) -> None:
    job = (await jwt_client.post("/api/jobs", json={"message": "stop me"}, headers=bearer(token({})))).json()
    # DeltaKit's stop() and EventSource send no Authorization header.
    cancelled = await jwt_client.post(job["cancel_url"])
    assert cancelled.status_code == 200 and cancelled.json() == {"status": "ok", "job_status": "cancelled"}
    body = await read_stream(jwt_client, job["events_url"])
    assert deltakit_events(body) == [{"type": "done", "status": "cancelled"}]
    # A token opens its own job only.
    other = (await jwt_client.post("/api/jobs", json={"message": "other"}, headers=bearer(token({})))).json()
    foreign = job["events_url"].replace(job["job_id"], other["job_id"])
    assert_error(await jwt_client.get(foreign), 401, "invalid_token")


async def test_a_custom_authenticator_from_a_module(custom_api: ApiServer, pool: AsyncConnectionPool) -> None:
    async with httpx.AsyncClient(base_url=custom_api.url, timeout=30.0) as client:
        assert_error(await client.get("/api/jobs"), 401, "no_session")
        assert_error(await client.get("/api/jobs", headers={"X-Host-Session": "acme"}), 401, "bad_session")
        before = await job_count(pool)
        assert_error(await client.post("/api/jobs", json={"message": "x"}), 401, "no_session")
        assert await job_count(pool) == before

        tenant = f"host-{uuid.uuid4().hex[:8]}"
        created = await client.post("/api/jobs", json={"message": "hi"}, headers={"X-Host-Session": f"{tenant}/grace"})
        assert created.status_code == 202, created.text
        job = created.json()
        assert job["user_id"] == "grace"
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT tenant, user_id FROM jobs WHERE id = %s", (job["job_id"],))
            assert await cur.fetchone() == {"tenant": tenant, "user_id": "grace"}
        other = {"X-Host-Session": "someone-else/grace"}
        assert_error(await client.get(f"/api/jobs/{job['job_id']}", headers=other), 404, "not_found")
        # Header-less: the stream token, whatever the authenticator.
        assert (await client.post(job["cancel_url"])).json()["job_status"] == "cancelled"
        assert deltakit_events(await read_stream(client, job["events_url"])) == [
            {"type": "done", "status": "cancelled"}
        ]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("tests.support.no_such_module:authenticate", "cannot be loaded"),
        ("tests.support.custom_auth:missing", "cannot be loaded"),
        ("tests.support.custom_auth:not_async", "must name an async callable"),
        ("tests.support.custom_auth", "must be module:callable"),
    ],
)
def test_a_bad_authenticator_stops_the_api_with_one_line(service_env: dict[str, str], spec: str, says: str) -> None:
    env = {**service_env, "RUNSTREAM_AUTH": spec, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([RUNSTREAM, "api", "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert says in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_auth_and_api_keys_together_are_refused() -> None:
    os.environ["RUNSTREAM_AUTH"] = "tests.support.custom_auth:authenticate"
    os.environ["RUNSTREAM_API_KEYS"] = "acme=key"
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match="RUNSTREAM_AUTH and RUNSTREAM_API_KEYS are both set"):
            get_settings()
    finally:
        del os.environ["RUNSTREAM_AUTH"], os.environ["RUNSTREAM_API_KEYS"]
        get_settings.cache_clear()


# --- RS256, in process, with a real key pair --------------------------------------------


def request_with(authorization: str) -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [(b"authorization", authorization.encode())]}
    )


def pem_pair() -> tuple[str, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


async def test_rs256_checks_the_issuers_signature() -> None:
    private_pem, public_pem = pem_pair()
    stranger_pem, _ = pem_pair()
    settings = Settings(
        jwt_algorithm="RS256", jwt_key=public_pem, jwt_audience=AUDIENCE, jwt_issuer="https://login.example"
    )
    authenticator = JwtAuthenticator(settings)
    claims = {"iss": "https://login.example"}
    good = token(claims, key=private_pem, algorithm="RS256")
    assert await authenticator(request_with(f"Bearer {good}")) == Principal("acme", "ada")

    forged = token(claims, key=stranger_pem, algorithm="RS256")
    with pytest.raises(Unauthorized) as refused:
        await authenticator(request_with(f"Bearer {forged}"))
    assert (refused.value.code, refused.value.message) == ("invalid_token", "the token's signature is not valid")
    wrong_issuer = token({"iss": "https://evil.example"}, key=private_pem, algorithm="RS256")
    with pytest.raises(Unauthorized, match="expected issuer"):
        await authenticator(request_with(f"Bearer {wrong_issuer}"))
    # An HS256 token signed with the public key (the classic confusion) is refused.
    confused = jwt.encode({"sub": "ada", "tenant": "acme", "aud": AUDIENCE, "exp": 2**40}, "k" * 40, "HS256")
    with pytest.raises(Unauthorized):
        await authenticator(request_with(f"Bearer {confused}"))


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"jwt_audience": AUDIENCE}, "RUNSTREAM_JWT_KEY must be set"),
        ({"jwt_key": JWT_KEY}, "RUNSTREAM_JWT_AUDIENCE must be set"),
        ({"jwt_key": "short", "jwt_audience": AUDIENCE}, "at least 32 bytes"),
        ({"jwt_key": "not a pem", "jwt_audience": AUDIENCE, "jwt_algorithm": "RS256"}, "not a valid RS256 key"),
    ],
)
def test_the_jwt_authenticator_refuses_to_start_misconfigured(settings: dict[str, Any], says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        JwtAuthenticator(Settings(**settings))
