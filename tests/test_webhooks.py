"""Webhooks when runs end: a real HTTP receiver on loopback, a real worker sending.

The receiver is a plain ``http.server`` in a thread of the test process. This
module's API and worker allow private destinations (the receiver is on
127.0.0.1), sign with a known secret, and retry quickly; the session's shared
API, which does not allow them, shows the refusals.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError

from runstream.core.settings import Settings
from tests.conftest import service_environment
from tests.support.config import services
from tests.support.processes import ApiServer, ServiceProcess, free_port, start_api, start_worker
from tests.support.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
KEY, OTHER_KEY, DEFAULTED_KEY = "key-webhooks-main", "key-webhooks-other", "key-webhooks-defaulted"
TIMEOUT_S = 1.0
MAX_ATTEMPTS = 6


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, written out: HMAC-SHA256 under the
    base64-decoded key (after ``whsec_``) of ``id.timestamp.body``, base64, as
    one of the space-separated ``v1,<signature>`` entries."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(signature, expected)
        for version, _, signature in (entry.partition(",") for entry in headers["webhook-signature"].split(" "))
    )


class Receiver:
    """An HTTP endpoint on loopback that answers from a script of status codes
    (200 once the script is used up), records every request, and can hold its
    answers until it stops (a stalled receiver). Not listening until ``start``."""

    def __init__(self, statuses: list[int] | None = None, stalled: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/runstream"
        self.statuses = list(statuses or [])
        self.stalled = stalled
        self.stopping = threading.Event()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.stalled:
                    receiver.stopping.wait()
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture(scope="module")
def default_receiver() -> Iterator[Receiver]:
    """The receiver tenant "defaulted" sends to when a job names none (its setting)."""
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def webhook_env(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, default_receiver: Receiver
) -> dict[str, str]:
    env = service_environment(
        database_url, services.redis_url, f"rs-test-hooks-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("hooks")
    )
    return {
        **env,
        "RUNSTREAM_API_KEYS": f"hooks={KEY},other={OTHER_KEY},defaulted={DEFAULTED_KEY}",
        "RUNSTREAM_WEBHOOK_SECRETS": f"hooks={SECRET},defaulted={SECRET}",
        "RUNSTREAM_WEBHOOK_URLS": f"defaulted={default_receiver.url}",
        "RUNSTREAM_WEBHOOK_ALLOW_PRIVATE": "true",
        "RUNSTREAM_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S),
        "RUNSTREAM_WEBHOOK_BACKOFF_S": "0.3",
        "RUNSTREAM_WEBHOOK_BACKOFF_MAX_S": "1",
        "RUNSTREAM_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    }


@pytest.fixture(scope="module")
def hook_services(webhook_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    worker: ServiceProcess = start_worker(webhook_env, log_dir, "hooks-worker")
    api = start_api(webhook_env, log_dir, "hooks-api")
    yield api
    api.stop()
    worker.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def hooks(hook_services: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=hook_services.url, timeout=30, headers=headers) as client:
        yield client


async def run_job(client: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/jobs", json={"message": "hello", "webhook": {"url": url}, **body})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["webhook"] == {"url": url}
    return job


async def deliveries_when(
    client: httpx.AsyncClient,
    job_id: str,
    done: Any,
    *,
    what: str = "settled",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll GET /api/jobs/{id}/webhooks until ``done(body)``; answers that body."""

    async def body_if_done() -> dict[str, Any] | None:
        body = (await client.get(f"/api/jobs/{job_id}/webhooks", headers=headers)).json()
        return body if done(body) else None

    return await eventually(body_if_done, timeout=60, what=f"the webhooks of job {job_id}: {what}")


def settled(body: dict[str, Any]) -> bool:
    return bool(body["deliveries"]) and all(d["status"] != "pending" for d in body["deliveries"])


async def test_a_delivery_is_signed_and_carries_the_job(hooks: httpx.AsyncClient) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        job = await run_job(hooks, receiver.url)
        body = await deliveries_when(hooks, job["job_id"], settled)
    finally:
        receiver.stop()
    [delivery] = body["deliveries"]
    assert (delivery["status"], delivery["job_status"], delivery["url"]) == ("delivered", "completed", receiver.url)
    [attempt] = delivery["attempts"]
    assert (attempt["attempt"], attempt["outcome"], attempt["response_status"]) == (1, "delivered", 200)

    [(headers, raw)] = receiver.requests
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == delivery["webhook_id"]
    assert verify_signature(SECRET, headers, raw)
    assert not verify_signature(SECRET, headers, raw + b" ")
    assert not verify_signature("whsec_" + base64.b64encode(b"x" * 32).decode(), headers, raw)
    sent = json.loads(raw)
    assert sent["type"] == "job.completed"
    status = (await hooks.get(f"/api/jobs/{job['job_id']}")).json()
    # Unix seconds of the sending: after the job ended, and by now.
    finished = int(datetime.fromisoformat(status["finished_at"]).timestamp())
    assert finished <= int(headers["webhook-timestamp"]) <= time.time()
    # The job's JSON, as GET /api/jobs/{id} answers it (less the stream links it adds).
    assert sent["data"] == {k: v for k, v in status.items() if k in sent["data"]}
    assert sent["data"]["status"] == "completed" and sent["data"]["job_id"] == job["job_id"]
    assert set(status) - set(sent["data"]) == {
        "stream_token",
        "stream_token_expires_at",
        "events_url",
        "cancel_url",
        "continue_url",
    }


async def test_receiver_down_then_up_is_delivered_once_with_one_webhook_id(hooks: httpx.AsyncClient) -> None:
    receiver = Receiver(statuses=[503])  # up at last, it first answers 503 once
    try:
        job = await run_job(hooks, receiver.url)
        # Down: nothing listens on its port; two attempts fail to connect.
        await deliveries_when(
            hooks,
            job["job_id"],
            lambda b: b["deliveries"] and len(b["deliveries"][0]["attempts"]) >= 2,
            what="two attempts",
        )
        receiver.start()
        body = await deliveries_when(hooks, job["job_id"], settled)
    finally:
        receiver.stop()
    [delivery] = body["deliveries"]
    assert delivery["status"] == "delivered"
    outcomes = [(a["outcome"], a["response_status"]) for a in delivery["attempts"]]
    assert outcomes[-2:] == [("failed", 503), ("delivered", 200)]
    assert all(outcome == ("failed", None) for outcome in outcomes[:-2]) and len(outcomes) >= 4
    assert [a["attempt"] for a in delivery["attempts"]] == list(range(1, len(outcomes) + 1))
    assert all(a["error"] for a in delivery["attempts"][:-1])
    # Both requests that reached the receiver carry the one webhook-id, each signed.
    assert [h["webhook-id"] for h, _ in receiver.requests] == [delivery["webhook_id"]] * 2
    assert all(verify_signature(SECRET, h, raw) for h, raw in receiver.requests)
    assert receiver.requests[0][1] == receiver.requests[1][1]


async def test_a_slow_receiver_times_out_within_the_bound(hooks: httpx.AsyncClient) -> None:
    receiver = Receiver(stalled=True)
    receiver.start()
    try:
        job = await run_job(hooks, receiver.url)
        body = await deliveries_when(
            hooks, job["job_id"], lambda b: b["deliveries"] and b["deliveries"][0]["attempts"], what="an attempt"
        )
        # While the receiver stalls, runs go on: another job runs to its end.
        other = (await hooks.post("/api/jobs", json={"message": "meanwhile"})).json()
        async with hooks.stream("GET", f"/api/jobs/{other['job_id']}/events") as stream:
            assert '"type":"done"' in (await stream.aread()).decode().replace(" ", "")
    finally:
        receiver.stop()
    first = body["deliveries"][0]["attempts"][0]
    assert first["outcome"] == "failed" and first["response_status"] is None
    assert first["error"] == f"no answer within {TIMEOUT_S:g}s"
    assert TIMEOUT_S * 1000 <= first["duration_ms"] < TIMEOUT_S * 1000 * 4


async def test_a_failed_run_and_a_cancelled_one_are_announced(hooks: httpx.AsyncClient) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        failed = await run_job(hooks, receiver.url, metadata={"offline": {"fail": "model refused"}})
        sleeper = await run_job(
            hooks, receiver.url, session_id=f"s-{uuid.uuid4().hex}", metadata={"offline": {"tool_sleep_s": 30}}
        )
        await hooks.post(f"/api/jobs/{sleeper['job_id']}/cancel")
        one = await deliveries_when(hooks, failed["job_id"], settled)
        two = await deliveries_when(hooks, sleeper["job_id"], settled)
    finally:
        receiver.stop()
    assert [d["job_status"] for d in one["deliveries"]] == ["failed"]
    assert [d["job_status"] for d in two["deliveries"]] == ["cancelled"]
    types = sorted(json.loads(raw)["type"] for _, raw in receiver.requests)
    assert types == ["job.cancelled", "job.failed"]


async def test_webhooks_of_a_job_are_the_tenants_own(hooks: httpx.AsyncClient) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        job = await run_job(hooks, receiver.url)
        await deliveries_when(hooks, job["job_id"], settled)
    finally:
        receiver.stop()
    other = await hooks.get(f"/api/jobs/{job['job_id']}/webhooks", headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    assert (await hooks.get(f"/api/jobs/{uuid.uuid4()}/webhooks")).status_code == 404
    # A tenant with no signing secret cannot ask for webhooks.
    refused = await hooks.post(
        "/api/jobs",
        json={"message": "x", "webhook": {"url": receiver.url}},
        headers={"Authorization": f"Bearer {OTHER_KEY}"},
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "webhook_unavailable"


async def test_a_tenants_default_webhook_serves_its_jobs_that_name_none(
    hooks: httpx.AsyncClient, default_receiver: Receiver
) -> None:
    headers = {"Authorization": f"Bearer {DEFAULTED_KEY}"}
    job = (await hooks.post("/api/jobs", json={"message": "defaulted"}, headers=headers)).json()
    assert job["webhook"] == {"url": default_receiver.url}
    body = await deliveries_when(hooks, job["job_id"], settled, headers=headers)
    [delivery] = body["deliveries"]
    assert (delivery["status"], delivery["url"]) == ("delivered", default_receiver.url)
    [(seen, raw)] = [r for r in default_receiver.requests if r[0]["webhook-id"] == delivery["webhook_id"]]
    assert verify_signature(SECRET, seen, raw)
    assert json.loads(raw)["data"]["job_id"] == job["job_id"]


async def test_webhook_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="not tenant=whsec_"):
        Settings(webhook_secrets="a=plain-text")
    with pytest.raises(ValidationError, match="not tenant=http"):
        Settings(webhook_urls="a=ftp://example.com/")
    with pytest.raises(ValidationError, match="no secret in RUNSTREAM_WEBHOOK_SECRETS: a"):
        Settings(webhook_urls="a=https://example.com/hook")
    assert Settings(webhook_urls="a=https://example.com/h?x=1", webhook_secrets=f"a={SECRET}").webhook_url_map == {
        "a": "https://example.com/h?x=1"
    }


async def test_a_job_without_a_webhook_has_no_deliveries(hooks: httpx.AsyncClient) -> None:
    job = (await hooks.post("/api/jobs", json={"message": "quiet"})).json()
    assert job["webhook"] is None
    async with hooks.stream("GET", f"/api/jobs/{job['job_id']}/events") as stream:
        await stream.aread()
    assert (await hooks.get(f"/api/jobs/{job['job_id']}/webhooks")).json() == {
        "job_id": job["job_id"],
        "webhook": None,
        "deliveries": [],
    }


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("https://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://0.0.0.0/", "private or reserved"),
    ],
)
async def test_private_destinations_are_refused_with_a_clear_422(
    http: httpx.AsyncClient, pool: Any, url: str, why: str
) -> None:
    message = f"ssrf {uuid.uuid4().hex}"
    response = await http.post("/api/jobs", json={"message": message, "webhook": {"url": url}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "webhook_refused"
    assert error["message"].startswith("webhook.url: ") and why in error["message"]
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM jobs WHERE message = %s", [message])
        assert (await cur.fetchone())["n"] == 0


@pytest.mark.parametrize(
    "webhook",
    [{"url": "ftp://example.com/x"}, {"url": "http://user:pw@example.com/"}, {"url": "not a url"}, {"url": 7}, "x"],
)
async def test_malformed_webhooks_are_refused(http: httpx.AsyncClient, webhook: Any) -> None:
    response = await http.post("/api/jobs", json={"message": "x", "webhook": webhook})
    assert response.status_code == 422
    assert response.json()["error"]["code"] in ("webhook_refused", "invalid_body")
