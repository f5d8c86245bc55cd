"""DeltaKit's own client code against a live Runstream: what the page shows.

``tests/deltakit/chat.tsx`` is the README's DeltaKit configuration with API keys:
``useStreamChat`` from DeltaKit's own source (fetched unmodified at a pinned
commit by ``python -m tests.deltakit.vendored fetch``, checked here by hash; the
project commits no third-party source, so where it has not been fetched, as in
CI, these tests are skipped and say why), rendered by React's test renderer under Node, on a
page of another origin (CORS enforced as a browser does). The API and worker are
real processes; each test drives the page through ``tests/deltakit/harness.tsx``
and asserts what it shows: the exact text, whether the run id is kept for a
reload, and whether it is still loading.
"""

from __future__ import annotations

import asyncio
import json
import queue
import secrets
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runstream.core.settings import child_environment
from tests.deltakit import vendored
from tests.support.processes import ApiServer, ServiceProcess, start_api, start_worker
from tests.support.sse import deltakit_events, read_stream
from tests.support.waiting import wait_until

CLIENT_DIR = Path(__file__).with_name("deltakit")
ALIAS = "/api/chat-agno-background-task/"
PAGE_ORIGIN = "http://app.example.test"
MESSAGE = "Tell me about durable streams"
ANSWER_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page, bundled by esbuild from chat.tsx, harness.tsx and the fetched DeltaKit."""
    if not vendored.fetched():
        pytest.skip(
            "DeltaKit's client source is not fetched (it is never committed): "
            "run `python -m tests.deltakit.vendored fetch` where GitHub is in reach"
        )
    vendored.verify()
    esbuild = CLIENT_DIR / "node_modules" / ".bin" / "esbuild"
    if shutil.which("node") is None or not esbuild.exists():
        pytest.fail(
            "node and tests/deltakit/node_modules are required: run `make test` (it runs npm ci)", pytrace=False
        )
    bundle = tmp_path_factory.mktemp("deltakit") / "harness.cjs"
    subprocess.run(
        [str(esbuild), "harness.tsx", "--bundle", "--platform=node", f"--outfile={bundle}", "--log-level=warning"],
        cwd=CLIENT_DIR,
        check=True,
    )
    return bundle


@pytest.fixture(scope="module")
def api_key() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def env(service_env: dict[str, str], api_key: str) -> dict[str, str]:
    return {
        **service_env,
        "RUNSTREAM_QUEUE": f"rs-deltakit-{uuid.uuid4().hex[:10]}",
        # About 3 s an answer (30 words): long enough to act in the middle of one.
        "RUNSTREAM_OFFLINE_DELAY_MS": "100",
        "RUNSTREAM_API_KEYS": f"deltakit-page={api_key}",
        "RUNSTREAM_CORS_ORIGINS": PAGE_ORIGIN,
    }


@pytest.fixture(scope="module")
def worker(env: dict[str, str], log_dir: Path) -> Iterator[ServiceProcess]:
    process = start_worker(env, log_dir, "deltakit-worker")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(env: dict[str, str], log_dir: Path, worker: ServiceProcess) -> Iterator[ApiServer]:
    server = start_api(env, log_dir, "deltakit-api")
    yield server
    server.stop()


class Page:
    """One browser tab: the harness in Node, one JSON command and answer per line."""

    def __init__(self, bundle: Path, api: ApiServer, api_key: str, origin: str, log_dir: Path):
        self.log_path = log_dir / f"deltakit-page-{uuid.uuid4().hex[:6]}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["node", str(bundle)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=child_environment(
                    RUNSTREAM_DELTAKIT_API_URL=f"{api.url}{ALIAS}",
                    RUNSTREAM_DELTAKIT_API_KEY=api_key,
                    RUNSTREAM_DELTAKIT_PAGE_ORIGIN=origin,
                ),
            )
        self.answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.answers.put(line)

    def do(self, command: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"do": command, **args}) + "\n")
        self.proc.stdin.flush()
        try:
            answer = json.loads(self.answers.get(timeout=ANSWER_TIMEOUT_S))
        except queue.Empty:
            raise AssertionError(f"the page did not answer {command!r}:\n{self.log_path.read_text()}") from None
        assert answer["ok"], answer
        return answer["page"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def open_page(harness: Path, api_key: str, log_dir: Path) -> Iterator[Callable[..., Page]]:
    pages: list[Page] = []

    def open_(api: ApiServer, origin: str = PAGE_ORIGIN) -> Page:
        # Each test starts from an empty conversation of the page's tenant.
        httpx.post(f"{api.url}{ALIAS}clear", headers=auth(api_key)).raise_for_status()
        pages.append(Page(harness, api, api_key, origin, log_dir))
        return pages[-1]

    yield open_
    for page in pages:
        page.close()


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def answer_of(api: ApiServer, api_key: str, job_id: str) -> str:
    """The whole answer of a finished run, read from its stream."""

    async def read() -> str:
        async with httpx.AsyncClient(base_url=api.url, headers=auth(api_key)) as client:
            body = await read_stream(client, f"{ALIAS}jobs/{job_id}/events", timeout=30)
        events = deltakit_events(body)
        assert events[-1]["type"] == "done", events[-1]
        return "".join(e["delta"] for e in events if e["type"] == "text_delta")

    return asyncio.run(read())


def job_status(api: ApiServer, api_key: str, job_id: str) -> str:
    response = httpx.get(f"{api.url}{ALIAS}jobs/{job_id}", headers=auth(api_key))
    response.raise_for_status()
    return response.json()["status"]


def wait_for_status(api: ApiServer, api_key: str, job_id: str, status: str) -> None:
    wait_until(lambda: job_status(api, api_key, job_id) == status, what=f"job {job_id} to be {status}")


def conversation(answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "text": MESSAGE}, {"role": "assistant", "text": answer}]


def start_run(page: Page, chars: int) -> tuple[dict[str, Any], str]:
    """Open the page, send MESSAGE, and return once ``chars`` of the answer show."""
    assert page.do("mount")["messages"] == []
    page.do("send", text=MESSAGE)
    shown = page.do("wait_text", chars=chars)
    assert shown["loading"] and shown["alert"] is None
    return shown, shown["saved_run"]["id"]


def test_a_full_run_then_a_reload(api, api_key, open_page):
    page = open_page(api)
    running, job_id = start_run(page, chars=1)
    # The run id is kept with the cancel URL its stream token opens (absolute, this API's).
    assert running["saved_run"]["cancelUrl"].startswith(f"{api.url}/api/jobs/{job_id}/cancel?token=")

    done = page.do("wait_idle")
    answer = answer_of(api, api_key, job_id)
    assert answer.startswith(f"You said: {MESSAGE} Here is the offline answer:")
    assert done["messages"] == conversation(answer)
    assert (done["loading"], done["alert"], done["saved_run"]) == (False, None, None)
    # Every call crossed origins with the key, so each was preflighted and allowed:
    # the history, the start, the events.
    assert done["browser"]["refused"] == []
    assert done["browser"]["preflights"] == 3

    page.do("unmount")
    reloaded = page.do("mount")
    assert reloaded["messages"] == conversation(answer)
    assert (reloaded["loading"], reloaded["saved_run"]) == (False, None)


def test_resume_after_unmount_shows_the_answer_once_under_its_question(api, api_key, open_page):
    page = open_page(api)
    _, job_id = start_run(page, chars=20)
    left = page.do("unmount")
    assert left["saved_run"]["id"] == job_id
    assert job_status(api, api_key, job_id) == "running"

    back = page.do("mount")
    # The history has the question of the run in progress and none of its answer:
    # the resumed stream (replayed from its start) writes it, under the question.
    assert back["loading"] is True
    assert back["messages"][0] == {"role": "user", "text": MESSAGE}
    assert [m["role"] for m in back["messages"]] == ["user", "assistant"]
    done = page.do("wait_idle")
    assert done["messages"] == conversation(answer_of(api, api_key, job_id))
    assert (done["loading"], done["alert"], done["saved_run"]) == (False, None, None)


def test_stop_cancels_through_the_token_url(api, api_key, open_page):
    page = open_page(api)
    _, job_id = start_run(page, chars=20)
    stopped = page.do("stop")
    assert (stopped["loading"], stopped["alert"]) == (False, None)
    partial = stopped["messages"][-1]["text"]

    # stop() POSTs cancelApi with no headers: the stream token in the saved URL opens it.
    wait_for_status(api, api_key, job_id, "cancelled")
    assert answer_of(api, api_key, job_id).startswith(partial)

    # A reload does not resume a run that is over, and forgets it.
    page.do("unmount")
    reloaded = page.do("mount")
    assert reloaded["messages"][0] == {"role": "user", "text": MESSAGE}
    assert (reloaded["loading"], reloaded["saved_run"]) == (False, None)
    # The cancel's response passed the page's CORS check too (a refusal would be logged here).
    assert reloaded["browser"]["unhandled"] == [] and reloaded["browser"]["refused"] == []


def test_sigterm_within_the_grace_the_page_gets_the_whole_answer(env, api, api_key, log_dir, open_page):
    deployed = start_api(env, log_dir, "deltakit-api-term")
    try:
        page = open_page(deployed)
        _, job_id = start_run(page, chars=20)
        deployed.signal(signal.SIGTERM)  # a deploy: the stream goes on to its end, then the process goes
        done = page.do("wait_idle")
        assert deployed.proc.wait(30) == -signal.SIGTERM
    finally:
        deployed.stop()
    assert done["messages"] == conversation(answer_of(api, api_key, job_id))
    assert (done["loading"], done["alert"], done["saved_run"]) == (False, None, None)


def test_sigterm_past_the_grace_is_no_answer_and_a_reload_resumes(env, api, api_key, log_dir, open_page):
    api = start_api({**env, "RUNSTREAM_SHUTDOWN_GRACE_S": "0.2"}, log_dir, "deltakit-api-cut")
    try:
        page = open_page(api)
        _, job_id = start_run(page, chars=20)
        api.signal(signal.SIGTERM)
        cut = page.do("wait_idle")
        assert api.proc.wait(30) == -signal.SIGTERM
        # The cut is not an end: the page says so and keeps the run id for a reload.
        assert cut["loading"] is False
        assert cut["alert"] == "The answer was interrupted. Reload the page to resume it."
        assert cut["saved_run"]["id"] == job_id

        api = start_api(env, log_dir, "deltakit-api-cut-2", port=api.port)
        page.do("unmount")
        page.do("mount")
        done = page.do("wait_idle")
        answer = answer_of(api, api_key, job_id)
        truncated = cut["messages"][-1]["text"]
        assert answer.startswith(truncated) and len(truncated) < len(answer)
        assert done["messages"] == conversation(answer)
        assert (done["loading"], done["alert"], done["saved_run"]) == (False, None, None)
    finally:
        api.stop()


def test_an_origin_the_api_does_not_allow_is_refused_as_a_browser_would(api, api_key, open_page):
    page = open_page(api, origin="http://elsewhere.example.test")
    assert page.do("mount")["messages"] == []
    page.do("send", text=MESSAGE)
    refused = page.do("wait_idle")
    assert refused["alert"] is not None and refused["loading"] is False
    assert refused["browser"]["refused"] == [
        f"{ALIAS}: preflight 400, origin not allowed",
        f"{ALIAS}jobs: preflight 400, origin not allowed",
    ]
    assert httpx.get(f"{api.url}{ALIAS}", headers=auth(api_key)).json() == []


def test_the_readme_shows_the_configuration_these_tests_run():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"```tsx\n{(CLIENT_DIR / 'chat.tsx').read_text()}```" in readme
