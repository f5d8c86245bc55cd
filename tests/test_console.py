"""The operator console (/console) in real headless Chromium (Debian's package), against
a real API with two tenants' keys, two real workers, and a database of its own with
recovery on (a worker is SIGKILLed mid-run here, and its run must be recovered).

Screenshots of the three views land in docs/.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from runstream.db.status import Status
from tests.conftest import create_database, drop_database
from tests.faults.support import fault_env, spawn_worker, worker_ready
from tests.support.config import services
from tests.support.processes import ApiServer, ServiceProcess, start_api
from tests.support.waiting import wait_until
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser

ACME_KEY = "acme-console-key-5d1e"
GLOBEX_KEY = "globex-console-key-9b7c"
WAIT_MS = 30_000


class Stack:
    def __init__(self, database_url: str, api: ApiServer, env: dict[str, str], log_dir: Path):
        self.database_url = database_url
        self.api = api
        self.env = env
        self.log_dir = log_dir
        self.workers: dict[str, ServiceProcess] = {}

    def post(self, key: str, body: dict[str, Any]) -> str:
        response = httpx.post(
            f"{self.api.url}/api/jobs", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert response.status_code == 202, response.text
        return response.json()["job_id"]

    def job(self, job_id: str, key: str = ACME_KEY) -> dict[str, Any]:
        return httpx.get(
            f"{self.api.url}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10
        ).json()

    def events(self, job_id: str) -> list[dict[str, Any]]:
        page = httpx.get(
            f"{self.api.url}/api/jobs/{job_id}/events?limit=1000",
            headers={"Authorization": f"Bearer {ACME_KEY}", "Accept": "application/json"},
            timeout=10,
        ).json()
        return [e["data"] for e in page["events"]]

    def finished(self, job_id: str, key: str = ACME_KEY, timeout: float = 60) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            job = self.job(job_id, key)
            return job if job["status"] in ("completed", "failed", "cancelled") else None

        return wait_until(ended, timeout=timeout, interval=0.1, what=f"{job_id} ends")

    def row(self, job_id: str) -> dict[str, Any]:
        with psycopg.connect(self.database_url) as conn:
            status, last_seq, worker = conn.execute(
                "SELECT status, last_seq, worker FROM jobs WHERE id = %s", [job_id]
            ).fetchone()
        return {"status": status, "last_seq": last_seq, "worker": worker}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Stack]:
    """A database of its own (recovery is on: no other test's jobs may be taken for
    lost), two workers and one API, keys for tenants acme and globex, two agents."""
    database_url = create_database("rs_console")
    env = fault_env(
        database_url,
        services.redis_url,
        tmp_path_factory.mktemp("console-data"),
        RUNSTREAM_API_KEYS=f"acme={ACME_KEY},globex={GLOBEX_KEY}",
        RUNSTREAM_AGENTS="assistant=runstream.tasks.assistant:build_assistant,desk=tests.agents_fixture:desk",
    )
    workers = {slot: spawn_worker(env, log_dir, f"console-{slot}") for slot in ("a", "b")}
    api = start_api(env, log_dir, "console-api")
    stack = Stack(database_url, api, env, log_dir)
    stack.workers = workers
    for worker in workers.values():
        wait_until(lambda w=worker: worker_ready(w), timeout=60, what=f"{worker.name} ready")
    yield stack
    api.stop()
    for worker in stack.workers.values():
        worker.stop()
    drop_database(database_url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def console(browser: Browser, stack: Stack, key: str = ACME_KEY, hash_: str = "#/runs") -> Page:
    """A tab on the console, its key typed in, its live stream up."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=stack.api.url)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"/console{hash_}")
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#live[data-state=live]")
    return page


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    page = console(browser, stack)
    yield page
    page.context.close()


def row_ids(page: Page) -> list[str]:
    return page.eval_on_selector_all("[data-role=run-row]", "rows => rows.map(r => r.dataset.jobId)")


def rows(page: Page) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "[data-role=run-row]",
        """rows => rows.map(r => ({id: r.dataset.jobId, status: r.dataset.status,
            agent: r.querySelector('[data-role=agent]').textContent,
            session: r.querySelector('[data-role=session]').textContent}))""",
    )


def expect_rows(page: Page, ids: list[str]) -> None:
    """Wait until the table lists exactly ``ids``, in this order (a filter change or a
    page turn reads the list again)."""
    page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('[data-role=run-row]')].map(r => r.dataset.jobId))"
        " === JSON.stringify(ids)",
        arg=ids,
    )


# --- tests ---------------------------------------------------------------------------


def test_runs_appear_and_change_state_live(page: Page, stack: Stack) -> None:
    page.wait_for_selector("#view-runs[data-loaded]")
    # Every status a row of the run shows, as the page shows it (no reload in between).
    page.evaluate(
        """() => {
            window.seen = [];
            new MutationObserver(() => {
                for (const r of document.querySelectorAll('[data-role=run-row]')) window.seen.push(r.dataset.jobId + ':' + r.dataset.status);
            }).observe(document.querySelector('#runs-body'), {subtree: true, childList: true, attributes: true});
        }"""
    )
    job_id = stack.post(ACME_KEY, {"message": "tell me about durable streams", "metadata": {"offline": {"words": 300}}})
    page.wait_for_selector(f"[data-role=run-row][data-job-id='{job_id}'][data-status=running]")
    page.wait_for_selector(f"[data-role=run-row][data-job-id='{job_id}'][data-status=completed]", timeout=60_000)
    seen = [s.split(":")[1] for s in page.evaluate("window.seen") if s.startswith(job_id)]
    assert "running" in seen and seen[-1] == "completed"
    assert seen.index("running") < seen.index("completed")
    assert row_ids(page)[0] == job_id
    row = page.locator(f"[data-role=run-row][data-job-id='{job_id}']")
    assert row.locator("[data-role=agent]").text_content() == "assistant"
    assert row.locator("[data-role=attempts]").text_content() == "1"
    # Its time to first token, from the analytics views, once it has one.
    page.wait_for_function(
        f"() => /\\d/.test(document.querySelector(\"[data-job-id='{job_id}'] [data-role=ttft]\").textContent)"
    )
    # Created, claimed, finished: three transitions reached the page, and the
    # page was never reloaded (that would have dropped window.seen).
    assert int(page.evaluate("document.body.dataset.transitions")) >= 3
    assert page.evaluate("Array.isArray(window.seen)")


def test_filters_by_status_agent_session_and_time(page: Page, stack: Stack) -> None:
    session = f"console-{uuid.uuid4().hex[:6]}"
    done = stack.post(ACME_KEY, {"message": "What is 19+23?", "session_id": session})
    failed = stack.post(
        ACME_KEY, {"message": "hello", "session_id": session, "metadata": {"offline": {"fail": "broken"}}}
    )
    desk = stack.post(ACME_KEY, {"message": "lookup_order 7", "session_id": session, "agent": "desk"})
    elsewhere = stack.post(ACME_KEY, {"message": "hello", "session_id": f"{session}-other"})
    for job_id in (done, failed, desk, elsewhere):
        stack.finished(job_id)
    # A run of two days ago in the same session (written as it would have been then).
    old = uuid.uuid4()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, tenant, session_id, message, model, agent, status, attempt,"
            " created_at, started_at, finished_at) VALUES (%s, 'acme', %s, 'old', 'offline', 'assistant',"
            " 'completed', 1, now() - interval '2 days', now() - interval '2 days' + interval '1 second',"
            " now() - interval '2 days' + interval '3 seconds')",
            [old, session],
        )

    page.fill("#f-session", session)
    # Newest first.
    expect_rows(page, [desk, failed, done, str(old)])
    assert {r["session"] for r in rows(page)} == {session}

    # The filter offers every status, as the server's enum lists them (statuses.js).
    options = page.eval_on_selector_all("#f-status option", "els => els.map(e => e.value)")
    assert options == ["", *Status]
    page.select_option("#f-status", "failed")
    expect_rows(page, [failed])
    assert [r["status"] for r in rows(page)] == ["failed"]

    page.select_option("#f-status", "")
    page.select_option("#f-agent", "desk")
    expect_rows(page, [desk])
    assert [r["agent"] for r in rows(page)] == ["desk"]

    page.select_option("#f-agent", "")
    page.select_option("#f-window", "86400")
    expect_rows(page, [desk, failed, done])
    # A window of its own: from three days ago to one day ago holds the old run only.
    page.select_option("#f-window", "custom")
    page.evaluate(
        """() => {
            const local = (days) => {
                const d = new Date(Date.now() - days * 86400000);
                return new Date(d - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
            };
            for (const [id, days] of [["f-from", 3], ["f-to", 1]]) {
                const input = document.getElementById(id);
                input.value = local(days);
                input.dispatchEvent(new Event("change"));
            }
        }"""
    )
    expect_rows(page, [str(old)])
    page.select_option("#f-window", "")

    # Keyset paging, two runs a page (?limit= sets the page size): older, then newer.
    page.goto("/console?limit=2#/runs")
    page.fill("#f-session", session)
    expect_rows(page, [desk, failed])
    assert page.locator("#newer").is_disabled()
    page.click("#older")
    expect_rows(page, [done, str(old)])
    assert page.locator("#page-label").text_content() == "page 2"
    assert page.locator("#older").is_disabled()
    page.click("#newer")
    expect_rows(page, [desk, failed])


def test_the_timeline_of_a_run_whose_worker_was_killed_shows_both_attempts_and_the_retry(
    browser: Browser, stack: Stack
) -> None:
    job_id = stack.post(ACME_KEY, {"message": "tell me about durable streams", "metadata": {"offline": {"words": 400}}})
    wait_until(
        lambda: (r := stack.row(job_id))["status"] == "running" and r["last_seq"] >= 20,
        timeout=30,
        interval=0.01,
        what="mid-run",
    )
    running_on = stack.row(job_id)["worker"]
    [slot] = [s for s, w in stack.workers.items() if running_on.startswith(f"{w.name}@")]
    stack.workers[slot].kill()
    stack.workers[slot] = spawn_worker(stack.env, stack.log_dir, f"console-{slot}2")
    job = stack.finished(job_id)
    assert (job["status"], job["attempt"]) == ("completed", 2)

    page = console(browser, stack, hash_=f"#/runs/{job_id}")
    try:
        page.wait_for_selector("#view-run[data-status=completed]")
        starts = page.eval_on_selector_all("[data-role=attempt-start]", "els => els.map(e => e.dataset.attempt)")
        assert starts == ["1", "2"]
        retry = page.locator("[data-role=event][data-type=retry]")
        assert retry.count() == 1
        assert "attempt 2: worker lost" in retry.text_content()
        attempts = page.eval_on_selector_all("[data-role=event]", "els => els.map(e => e.dataset.attempt)")
        stored = stack.events(job_id)
        # Every event of the log, in order, each under its attempt.
        assert int(page.locator("#view-run").get_attribute("data-events")) == len(stored)
        cut = [e["type"] for e in stored].index("retry")
        assert attempts == ["1"] * cut + ["2"] * (len(stored) - cut)
        # Offsets count up from submission.
        offsets = page.eval_on_selector_all(
            "[data-role=event] .off", "els => els.map(e => parseFloat(e.textContent.slice(1)))"
        )
        assert offsets == sorted(offsets) and offsets[0] >= 0
        answer = "".join(e["delta"] for e in stored[cut:] if e["type"] == "text_delta")
        assert page.locator("#answer").text_content() == answer
        raw = json.loads(page.locator("#raw-json").text_content())
        assert [e["data"] for e in raw] == stored
        assert page.locator("#cancel").is_disabled()
    finally:
        page.context.close()


def test_a_run_with_a_tool_call_shows_its_duration_and_retry_starts_a_new_run(page: Page, stack: Stack) -> None:
    session = f"console-{uuid.uuid4().hex[:6]}"
    # Its first attempt fails at once (a transient model error); the second calls a tool.
    job_id = stack.post(
        ACME_KEY,
        {
            "message": "What is 19+23?",
            "session_id": session,
            "agent": "assistant",
            "metadata": {"offline": {"fail_attempts": 1}},
        },
    )
    stack.finished(job_id)
    page.goto(f"/console#/runs/{job_id}")
    page.wait_for_selector("#view-run[data-status=completed]")
    starts = page.eval_on_selector_all("[data-role=attempt-start]", "els => els.map(e => e.dataset.attempt)")
    assert starts == ["1", "2"]
    assert page.locator("[data-role=event]").first.get_attribute("data-type") == "retry"
    call = page.locator("[data-role=event][data-type=tool_call]")
    assert call.count() == 1 and "calculate" in call.text_content()
    assert call.get_attribute("data-attempt") == "2"
    assert int(call.get_attribute("data-duration-ms")) >= 0
    assert call.locator("[data-role=tool-duration]").text_content().endswith("ms")
    assert "42" in page.locator("#answer").text_content()
    page.screenshot(path=services.screenshot_path("console-run.png"), full_page=True)

    page.click("#retry")
    page.wait_for_function("id => location.hash.startsWith('#/runs/') && !location.hash.endsWith(id)", arg=job_id)
    new_id = page.evaluate("location.hash.slice('#/runs/'.length)")
    page.wait_for_selector("#view-run[data-status=completed]")
    again = stack.job(new_id)
    assert (again["message"], again["session_id"], again["agent"]) == ("What is 19+23?", session, "assistant")


def test_cancel_stops_a_running_run(page: Page, stack: Stack) -> None:
    job_id = stack.post(
        ACME_KEY, {"message": "tell me about durable streams", "metadata": {"offline": {"words": 5000}}}
    )
    page.goto(f"/console#/runs/{job_id}")
    page.wait_for_selector("#view-run[data-status=running]")
    page.wait_for_function("() => Number(document.querySelector('#view-run').dataset.events) > 3")
    page.click("#cancel")
    page.wait_for_selector("#view-run[data-status=cancelled]")
    assert stack.job(job_id)["status"] == "cancelled"
    assert stack.events(job_id)[-1] == {"type": "done", "status": "cancelled"}
    assert page.locator("[data-role=event]").last.get_attribute("data-type") == "done"
    assert page.locator("#cancel").is_disabled()


def test_the_charts_render_the_analytics(page: Page, stack: Stack) -> None:
    # What the earlier tests ran (this test makes sure of a few of its own).
    for body in (
        {"message": "What is 19+23?"},
        {"message": "hi", "metadata": {"offline": {"fail": "no"}}},
        {"message": "lookup_order 9", "agent": "desk"},
    ):
        stack.finished(stack.post(ACME_KEY, body))
    page.goto("/console#/analytics")
    page.select_option("#a-window", "900:30")
    page.wait_for_selector("svg[data-chart=runs] rect[data-outcome=completed]")
    # The numbers the charts draw are the API's: the bars add up to the summary's counts.
    page.wait_for_function("() => document.querySelector('[data-card=jobs] .v')")
    counts = page.eval_on_selector_all(
        "svg[data-chart=runs] rect", "els => els.map(e => [e.dataset.outcome, Number(e.dataset.count)])"
    )
    by_outcome: dict[str, int] = {}
    for outcome, count in counts:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + count
    jobs_card = int(page.locator("[data-card=jobs] .v").text_content())
    assert sum(by_outcome.values()) == jobs_card >= 6
    assert by_outcome["completed"] >= 4 and by_outcome["failed"] >= 2
    for chart in ("ttft", "duration"):
        values = page.eval_on_selector_all(
            f"svg[data-chart={chart}] circle[data-series=p95]", "els => els.map(e => Number(e.dataset.value))"
        )
        assert values and all(v > 0 for v in values)
    assert page.locator("svg[data-chart=rates] circle[data-series='failure rate']").count() >= 1
    tools = page.locator("svg[data-chart=tools] g[data-row=calculate] rect[data-part=ok]")
    assert int(tools.first.get_attribute("data-count")) >= 1
    agents = page.eval_on_selector_all("svg[data-chart=agents] g", "els => els.map(e => e.dataset.row)")
    assert {"assistant", "desk"} <= set(agents)
    assert "%" in page.locator("[data-card=failure-rate] .v").text_content()
    page.screenshot(path=services.screenshot_path("console-analytics.png"), full_page=True)


def test_another_tenants_runs_never_appear(browser: Browser, page: Page, stack: Stack) -> None:
    page.wait_for_selector("#view-runs[data-loaded]")
    theirs = stack.post(GLOBEX_KEY, {"message": "globex secret plans"})
    stack.finished(theirs, GLOBEX_KEY)
    ours = stack.post(ACME_KEY, {"message": "What is 19+23?"})
    # Ours arrives live, after theirs had moved through all its states.
    page.wait_for_selector(f"[data-role=run-row][data-job-id='{ours}'][data-status=completed]", timeout=60_000)
    assert theirs not in row_ids(page)
    assert "globex secret" not in page.content()
    page.screenshot(path=services.screenshot_path("console-runs.png"), full_page=True)

    # Globex's console lists it; acme's cannot open it by its id.
    other = console(browser, stack, key=GLOBEX_KEY)
    try:
        other.wait_for_selector(f"[data-role=run-row][data-job-id='{theirs}']")
        assert ours not in row_ids(other)
    finally:
        other.context.close()
    page.goto(f"/console#/runs/{theirs}")
    page.wait_for_selector("#view-run[data-missing=true]")
    assert "No such run" in page.locator("#error").text_content()
    assert "globex secret" not in page.content()
