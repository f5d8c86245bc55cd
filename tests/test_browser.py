"""The chat page in real headless Chromium (Debian's package), against a real API and
worker. The worker streams slowly (RUNSTREAM_OFFLINE_DELAY_MS), so a test can reload,
stop, or join while a run is still going."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, sync_playwright

from tests.support.config import services
from tests.support.processes import ApiServer, start_api, start_worker
from tests.support.sse import deltakit_events

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
# 30 words at 120 ms: a run takes about 4 s, long enough to act in the middle of it.
DELAY_MS = "120"
LONG_PROMPT = "Explain how resumable streams work"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def paced(service_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    """A slow worker and an API of their own, on a queue no other worker consumes;
    the built-in assistant (the default), a team of the test agents module, and the
    example desk's agent whose refunds wait for approval."""
    env = dict(
        service_env,
        RUNSTREAM_OFFLINE_DELAY_MS=DELAY_MS,
        RUNSTREAM_QUEUE=f"{service_env['RUNSTREAM_QUEUE']}-browser",
        RUNSTREAM_AGENTS=(
            "assistant=runstream.tasks.assistant:build_assistant,desk=tests.agents_fixture:desk,"
            "refunds=examples.support_desk.approvals:refunds_agent"
        ),
    )
    worker = start_worker(env, log_dir, "browser-worker")
    api = start_api(env, log_dir, "browser-api")
    yield api
    api.stop()
    worker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def new_page(browser: Browser, api: ApiServer) -> Page:
    # A context per page: its own sessionStorage, as a separate browser tab session.
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=api.url)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    return page


@pytest.fixture
def page(browser: Browser, paced: ApiServer) -> Iterator[Page]:
    page = new_page(browser, paced)
    yield page
    page.context.close()


# --- helpers -------------------------------------------------------------------------


def send(page: Page, prompt: str) -> str:
    """Type a prompt, send it; returns the new run's job id."""
    before = page.locator("#run").get_attribute("data-job-id")
    page.fill("#prompt", prompt)
    page.click("#send")
    page.wait_for_function(
        "before => { const id = document.querySelector('#run').dataset.jobId; return id && id !== before }",
        arg=before,
    )
    return page.locator("#run").get_attribute("data-job-id")


def answer(page: Page) -> str:
    return page.locator("[data-role=answer]").text_content() or ""


def wait_status(page: Page, status: str) -> None:
    page.wait_for_selector(f"#status[data-status={status}]")


def wait_streaming(page: Page, words: int = 1) -> str:
    """Wait until the run is live with at least ``words`` words rendered, not ended."""
    page.wait_for_function(
        """words => {
            const run = document.querySelector('#run');
            const text = document.querySelector('[data-role=answer]').textContent;
            return run.dataset.stream === 'live' && text.split(' ').filter(Boolean).length >= words;
        }""",
        arg=words,
    )
    return answer(page)


def stored_events(api: ApiServer, job_id: str) -> list[dict]:
    """The run's events as the server keeps them (the job has ended: the stream ends)."""
    return deltakit_events(httpx.get(f"{api.url}/api/jobs/{job_id}/events", timeout=60).text)


def stored_answer(api: ApiServer, job_id: str) -> str:
    """The answer the log spells: text deltas after the last retry."""
    text = ""
    for event in stored_events(api, job_id):
        if event["type"] == "retry":
            text = ""
        elif event["type"] == "text_delta":
            text += event["delta"]
    return text


def uninterrupted_answer(api: ApiServer, prompt: str) -> str:
    job = httpx.post(f"{api.url}/api/jobs", json={"message": prompt}, timeout=10).json()
    events = stored_events(api, job["job_id"])
    assert events[-1] == {"type": "done", "status": "completed"}
    return "".join(e["delta"] for e in events if e["type"] == "text_delta")


# --- tests ---------------------------------------------------------------------------


def test_a_prompt_streams_with_reasoning_and_tool_calls(page: Page, paced: ApiServer) -> None:
    page.goto("/")
    assert page.locator("#status").get_attribute("data-status") == "idle"
    first = send(page, LONG_PROMPT)
    wait_status(page, "completed")

    job_id = send(page, "What is 19+23?")
    partial = wait_streaming(page)
    wait_status(page, "completed")
    final = answer(page)
    # It arrived in pieces, and the last piece completes the first.
    assert final.startswith(partial) and len(final) > len(partial)
    assert final == stored_answer(paced, job_id)
    assert "42" in final

    reasoning = page.locator("[data-role=reasoning]")
    assert reasoning.count() >= 1
    assert "19+23" in reasoning.first.text_content()
    tool = page.locator("[data-role=tool-call]")
    assert tool.count() == 1
    assert tool.get_attribute("data-state") == "done"
    assert tool.locator("[data-role=tool-name]").text_content() == "calculate"
    assert "19+23" in tool.locator("[data-role=tool-args]").text_content()
    assert tool.locator("[data-role=tool-result]").text_content().strip() == "42"
    assert page.locator("[data-role=outcome]").get_attribute("data-kind") == "completed"
    assert page.locator("#stop").is_hidden()
    assert page.locator("[data-role=attempt]").text_content() == "attempt 1"
    assert f"job={job_id}" in page.url

    # The session's runs, newest first; the open one is marked.
    items = page.locator("[data-role=run-item]")
    assert [items.nth(i).get_attribute("data-job-id") for i in range(items.count())] == [job_id, first]
    page.locator(f"[data-role=run-item][data-job-id='{job_id}']").wait_for()
    assert "active" in page.locator(f"[data-role=run-item][data-job-id='{job_id}']").get_attribute("class")
    page.screenshot(path=services.screenshot_path("chat.png"))

    # Clicking a past run replays it from the log.
    page.click(f"[data-role=run-item][data-job-id='{first}']")
    wait_status(page, "completed")
    page.wait_for_selector("#run[data-stream=ended]")
    assert page.locator("#run").get_attribute("data-job-id") == first
    assert answer(page) == stored_answer(paced, first)
    assert page.locator("[data-role=tool-call]").count() == 0


def test_a_team_run_shows_its_delegations_and_members(page: Page, paced: ApiServer) -> None:
    page.goto("/")
    picker = page.locator("[data-role=agent]")
    picker.wait_for()
    assert [o.get_attribute("value") for o in picker.locator("option").all()] == ["", "desk", "refunds"]
    picker.select_option("desk")
    job_id = send(page, "lookup_order 7")
    wait_status(page, "completed")
    assert answer(page) == stored_answer(paced, job_id)
    assert answer(page).startswith("Let me ask billing.Let me ask shipping.billing answered:")
    notes = page.locator("[data-role=note]")
    labels = [notes.nth(i).locator("[data-role=note-label]").text_content() for i in range(notes.count())]
    assert labels == ["Delegated to billing", "Billing", "Delegated to shipping", "Shipping"]
    assert {notes.nth(i).get_attribute("data-state") for i in range(notes.count())} == {"done"}
    billing = notes.nth(1).locator("[data-role=note-text]").text_content()
    assert billing == "Let me use lookup_order.The lookup_order tool answered: order 7 shipped on Monday."
    tool = page.locator("[data-role=tool-call]")
    assert tool.locator("[data-role=tool-name]").text_content() == "Billing · lookup_order"
    assert tool.locator("[data-role=tool-result]").text_content().strip() == "order 7 shipped on Monday"
    assert httpx.get(f"{paced.url}/api/jobs/{job_id}").json()["agent"] == "desk"


def test_a_reload_mid_stream_resumes_without_gaps_or_duplicates(page: Page, paced: ApiServer) -> None:
    resumes: list[str | None] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/events"):
            resumes.append(request.headers.get("last-event-id"))

    page.on("request", on_request)
    page.goto("/")
    job_id = send(page, LONG_PROMPT)

    for words in (4, 14):
        before = wait_streaming(page, words)
        page.reload()
        # The rendered state is back at once, from sessionStorage: nothing lost...
        restored = page.locator("#run").get_attribute("data-last-event-id")
        assert int(restored) > 0
        assert answer(page).startswith(before)
        assert page.locator("#run").get_attribute("data-job-id") == job_id

    wait_status(page, "completed")
    final = answer(page)
    # ...and nothing repeated or skipped: the text of a run nobody interrupted.
    assert final == uninterrupted_answer(paced, LONG_PROMPT)
    assert final == stored_answer(paced, job_id)
    # The first stream started from the beginning; each one after a reload resumed
    # from the id the page had rendered (the header, as EventSource would send it).
    assert resumes[0] is None
    assert len(resumes) >= 3 and all(r is not None and int(r) > 0 for r in resumes[1:])
    assert [int(r) for r in resumes[1:]] == sorted(int(r) for r in resumes[1:])


def test_a_paused_run_asks_for_approval_survives_a_reload_and_continues_in_place(page: Page, paced: ApiServer) -> None:
    streams: list[str | None] = []
    page.on("request", lambda r: streams.append(r.headers.get("last-event-id")) if r.url.endswith("/events") else None)
    page.goto("/")
    picker = page.locator("[data-role=agent]")
    picker.wait_for()
    picker.select_option("refunds")
    job_id = send(page, "please issue_refund 1001")
    wait_status(page, "paused")
    request = page.locator("[data-role=input-request]")
    assert request.get_attribute("data-state") == "waiting"
    assert "Needs your approval: issue_refund" in request.text_content()
    assert '"order_number": "1001"' in request.locator(".tool-args").text_content()
    asked = answer(page)
    assert asked == "Let me use issue_refund."

    # A reload while paused: the request is back, the stream open again (and kept open).
    page.reload()
    wait_status(page, "paused")
    page.wait_for_selector("#run[data-stream=live]")
    assert page.locator("[data-role=input-request]").get_attribute("data-state") == "waiting"
    assert answer(page) == asked
    connections = len(streams)

    page.click("[data-role=approve]")
    wait_status(page, "completed")
    # The answer went on under the question, on the same connection.
    final = answer(page)
    assert final == stored_answer(paced, job_id)
    assert final == asked + "The issue_refund tool answered: refunded order 1001 (espresso machine)."
    assert len(streams) == connections
    assert page.locator("[data-role=input-request]").get_attribute("data-state") == "answered"
    assert page.locator("[data-role=requirement-outcome]").text_content() == "Approved"
    assert page.locator("[data-role=approve]").is_hidden()
    tool = page.locator("[data-role=tool-call]")
    assert tool.locator("[data-role=tool-result]").text_content().strip() == "refunded order 1001 (espresso machine)"
    events = stored_events(paced, job_id)
    assert [e["type"] for e in events].count("input_required") == 1
    assert events[-1] == {"type": "done", "status": "completed"}


def test_stop_cancels_the_run(page: Page, paced: ApiServer) -> None:
    page.goto("/")
    job_id = send(page, LONG_PROMPT)
    wait_streaming(page, 3)
    page.click("#stop")
    wait_status(page, "cancelled")
    outcome = page.locator("[data-role=outcome]")
    assert outcome.get_attribute("data-kind") == "cancelled"
    assert outcome.text_content() == "Stopped. The run was cancelled."
    assert page.locator("#stop").is_hidden()
    assert httpx.get(f"{paced.url}/api/jobs/{job_id}").json()["status"] == "cancelled"
    assert stored_events(paced, job_id)[-1] == {"type": "done", "status": "cancelled"}
    stopped = answer(page)
    assert stopped == stored_answer(paced, job_id)
    assert len(stopped) < len(uninterrupted_answer(paced, LONG_PROMPT))


def test_a_second_tab_on_the_same_run_streams_it_too(browser: Browser, page: Page, paced: ApiServer) -> None:
    page.goto("/")
    job_id = send(page, LONG_PROMPT)
    wait_streaming(page, 2)

    second = new_page(browser, paced)
    try:
        second.goto(f"/?job={job_id}")
        # It joins while the run is going, and follows it live.
        wait_streaming(second, 1)
        assert page.locator("#status").get_attribute("data-status") == "running"
        wait_status(page, "completed")
        wait_status(second, "completed")
        assert answer(second) == answer(page) == stored_answer(paced, job_id)
        # The tab joined the run's session: its sidebar lists the run.
        second.locator(f"[data-role=run-item][data-job-id='{job_id}']").wait_for()
    finally:
        second.context.close()


def test_a_retried_run_shows_its_attempt_and_only_the_last_attempts_answer(page: Page, paced: ApiServer) -> None:
    session = f"browser-{uuid.uuid4().hex[:8]}"
    job = httpx.post(
        f"{paced.url}/api/jobs",
        json={"message": LONG_PROMPT, "session_id": session, "metadata": {"offline": {"fail_attempts": 1}}},
    ).json()
    page.goto(f"/?job={job['job_id']}")
    wait_status(page, "completed")
    assert page.locator("[data-role=attempt]").text_content() == "attempt 2"
    notice = page.locator("[data-role=notice]")
    assert notice.is_visible() and "Attempt 2" in notice.text_content()
    assert [e["type"] for e in stored_events(paced, job["job_id"])].count("retry") == 1
    assert answer(page) == stored_answer(paced, job["job_id"]) == uninterrupted_answer(paced, LONG_PROMPT)


def test_an_unknown_run_link_says_so(page: Page) -> None:
    page.goto(f"/?job={uuid.uuid4()}")
    page.wait_for_selector("#composer-error:not([hidden])")
    assert "does not exist" in page.locator("#composer-error").text_content()
    assert page.locator("#status").get_attribute("data-status") == "idle"
    assert "job=" not in page.url


# --- an API with keys -------------------------------------------------------------------

KEY = "sekrit-browser-key-4f2a"


@pytest.fixture(scope="module")
def keyed(paced: ApiServer, log_dir: Path) -> Iterator[ApiServer]:
    """An API that wants a key, in front of the paced worker (same queue and database)."""
    api = start_api(dict(paced.env, RUNSTREAM_API_KEYS=f"acme={KEY}"), log_dir, "browser-keyed-api")
    yield api
    api.stop()


def key_kept(page: Page) -> dict[str, bool]:
    """Where the key is in the tab: localStorage, sessionStorage, the address bar."""
    return page.evaluate(
        """key => ({
            local: JSON.stringify({...localStorage}).includes(key),
            session: JSON.stringify({...sessionStorage}).includes(key),
            url: location.href.includes(key),
        })""",
        KEY,
    )


def test_the_key_is_typed_in_and_kept_only_in_the_tabs_session_storage(browser: Browser, keyed: ApiServer) -> None:
    page = new_page(browser, keyed)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        # A key left by an older version of the page is deleted; `?key=` is not
        # used, only taken out of the address bar.
        page.goto("/")
        page.evaluate("key => localStorage.setItem('runstream.apiKey', key)", KEY)
        page.goto(f"/?key={KEY}")
        page.wait_for_selector("#key-form:not([hidden])")
        assert "needs an API key" in page.locator("#composer-error").text_content()
        assert key_kept(page) == {"local": False, "session": False, "url": False}

        page.fill("#api-key", "not-the-key")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-form:not([hidden])")
        assert "refused" in page.locator("#composer-error").text_content()

        page.fill("#api-key", KEY)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-set:not([hidden])")
        assert page.locator("#key-form").is_hidden()
        job_id = send(page, "What is 19+23?")
        wait_status(page, "completed")
        assert "42" in answer(page)
        assert key_kept(page) == {"local": False, "session": True, "url": False}

        # A reload keeps it (same tab); the run is still there.
        page.reload()
        page.wait_for_selector(f"[data-role=run-item][data-job-id='{job_id}']")
        wait_status(page, "completed")
        assert key_kept(page) == {"local": False, "session": True, "url": False}

        # Another tab (a context of its own) does not have it.
        other = new_page(browser, keyed)
        try:
            other.goto(f"/?job={job_id}")
            other.wait_for_selector("#key-form:not([hidden])")
            assert key_kept(other) == {"local": False, "session": False, "url": False}
        finally:
            other.context.close()

        # Forgotten: gone from the tab.
        page.click("#forget-key")
        page.wait_for_selector("#key-form:not([hidden])")
        assert key_kept(page) == {"local": False, "session": False, "url": False}
        # No request the page made carried the key in its URL, but the first, typed by the user.
        assert [u for u in requested if KEY in u] == [f"{keyed.url}/?key={KEY}"]
    finally:
        page.context.close()
