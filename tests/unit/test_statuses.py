"""Job statuses and job rows, from their one source: the enum, and JobRow.

No services: the generated JS, the SQL written from the enum, the row type
against the columns the job queries return, and a row's JSON. (The database's
CHECK constraint is held to the enum in tests/test_statuses.py.)
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import fields
from datetime import UTC, datetime

from runstream.api.payloads import Job, JobWithStream
from runstream.api.static_gen import COMMAND, STATUSES_JS, statuses_js
from runstream.db import queries
from runstream.db.jobs import JobRow
from runstream.db.status import IN_PROGRESS_STATUSES, TERMINAL_STATUSES, Status


def test_the_pages_statuses_js_is_what_the_generator_writes_from_the_enum_now() -> None:
    assert STATUSES_JS.read_text() == statuses_js(), f"api/static/statuses.js is stale: run `{COMMAND}`"
    # And it says what the enum says.
    body = statuses_js()
    assert re.findall(r'^  (\w+): "(\w+)",$', body, re.M) == [(s.name, s.value) for s in Status]
    assert 'const TERMINAL_STATUSES = Object.freeze(["completed", "failed", "cancelled"]);' in body


def test_the_terminal_and_in_progress_statuses_split_the_enum() -> None:
    assert TERMINAL_STATUSES == {Status.COMPLETED, Status.FAILED, Status.CANCELLED}
    assert TERMINAL_STATUSES | IN_PROGRESS_STATUSES == set(Status)
    assert not TERMINAL_STATUSES & IN_PROGRESS_STATUSES


def test_the_sql_names_the_statuses_as_the_enum_spells_them_in_its_order() -> None:
    assert queries.TERMINAL_SQL == "'completed', 'failed', 'cancelled'"
    assert queries.IN_PROGRESS_SQL == "'pending', 'running', 'paused'"
    # One count per status, in the summary and in each interval of the series.
    counted = re.findall(r"outcome = '(\w+)'\) AS (\w+)", queries.OUTCOME_COUNTS)
    assert counted == [(s.value, s.value) for s in Status]
    assert queries.OUTCOME_COUNTS in queries.ANALYTICS_TIMINGS
    assert queries.OUTCOME_COUNTS in queries.ANALYTICS_SERIES


def test_a_job_row_has_a_field_for_each_column_the_job_queries_return() -> None:
    assert [f.name for f in fields(JobRow)] == [c.strip() for c in queries.JOB_COLUMNS.split(",")]


def test_a_row_s_status_is_the_enum_s_member_and_an_unknown_one_is_refused() -> None:
    row = job_row(status="paused")
    assert row.status is Status.PAUSED
    try:
        job_row(status="asleep")
    except ValueError as exc:
        assert "asleep" in str(exc)
    else:
        raise AssertionError("a status outside the enum was taken")


def job_row(**columns: object) -> JobRow:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    row = {
        "id": uuid.UUID("01940000-0000-7000-8000-000000000001"),
        "tenant": "acme",
        "session_id": "s-1",
        "message": "hi",
        "model": "offline",
        "status": "completed",
        "attempt": 2,
        "last_seq": 7,
        "cancel_requested_at": None,
        "error": None,
        "metadata": {"k": [1, "ü"]},
        "created_at": at,
        "started_at": at,
        "finished_at": at,
        "heartbeat_at": at,
        "worker": "w@host",
        "queued_at": at,
        "interrupted_at": None,
        "webhook_url": "https://example.com/hook",
        "user_id": "ada",
        "agent": "desk",
        "output": {"answer": 42},
        "requirements": None,
        "answers": None,
        "paused_at": None,
        "paused_s": 0.0,
        "attempt_base": 0,
    }
    return JobRow(**(row | columns))


def test_a_job_s_json_is_read_from_its_row_by_column_name() -> None:
    row = job_row()
    assert Job.model_validate(row).model_dump_json() == (
        '{"job_id":"01940000-0000-7000-8000-000000000001","status":"completed","user_id":"ada",'
        '"session_id":"s-1","message":"hi","model":"offline","agent":"desk","metadata":{"k":[1,"ü"]},'
        '"output":{"answer":42},"attempt":2,"last_event_id":7,"error":null,"cancel_requested":false,'
        '"requirements":null,"created_at":"2026-01-02T03:04:05.678901+00:00",'
        '"started_at":"2026-01-02T03:04:05.678901+00:00","finished_at":"2026-01-02T03:04:05.678901+00:00",'
        '"queued":true,"interrupted":false,"webhook":{"url":"https://example.com/hook"}}'
    )
    cancelled = job_row(
        status="cancelled", cancel_requested_at=row.created_at, interrupted_at=row.created_at, webhook_url=None
    )
    shown = Job.model_validate(cancelled)
    assert (shown.status, shown.cancel_requested, shown.interrupted, shown.webhook) == ("cancelled", True, True, None)


def test_a_job_with_its_links_is_the_job_s_json_then_the_links() -> None:
    row = job_row()
    links = {
        "stream_token": "t",
        "stream_token_expires_at": "2026-01-02T03:04:05+00:00",
        "events_url": "https://x/events?token=t",
        "cancel_url": "https://x/cancel?token=t",
        "continue_url": "https://x/continue?token=t",
    }
    answer = json.loads(JobWithStream.of(row, links).model_dump_json())
    assert answer == json.loads(Job.model_validate(row).model_dump_json()) | links
    assert list(answer) == list(JobWithStream.model_fields)
