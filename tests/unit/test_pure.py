"""The pure helpers, on their own: no services, no processes; the whole file runs in about a second.

They run first in ``make test`` (tests/conftest.py orders them), so a slip in one
of them fails in seconds rather than after the service tests.
"""

from __future__ import annotations

import argparse
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import errors
from pydantic import TypeAdapter, ValidationError

from runstream.api.cursor import MAX_CURSOR_CHARS, decode_cursor, encode_cursor
from runstream.api.errors import ApiError
from runstream.api.payloads import StorableJson
from runstream.core.durations import parse_duration
from runstream.db.errors import is_unavailable
from runstream.db.events import parse_notification
from runstream.tasks.event_writer import merge_text_deltas

# What a job's metadata may hold, validated as the new-job body validates it (strict).
STORABLE = TypeAdapter(StorableJson)

payloads = st.lists(
    st.one_of(
        st.builds(lambda d: {"type": "text_delta", "delta": d}, st.text(max_size=5)),
        st.builds(lambda t: {"type": "reasoning", "text": t}, st.text(max_size=5)),
        st.just({"type": "tool_call", "tool_name": "t", "argument": "{}", "call_id": None}),
    ),
    max_size=30,
)


@settings(derandomize=True)
@given(payloads)
def test_merging_text_deltas_keeps_the_text_and_the_order_of_everything_else(events: list[dict]) -> None:
    merged = merge_text_deltas(events)

    def runs(items: list[dict]) -> list[object]:
        out: list[object] = []
        for item in items:
            if item["type"] == "text_delta" and out and isinstance(out[-1], str):
                out[-1] += item["delta"]
            else:
                out.append(item["delta"] if item["type"] == "text_delta" else item)
        return out

    assert runs(merged) == runs(events)
    assert not any(a["type"] == b["type"] == "text_delta" for a, b in zip(merged, merged[1:], strict=False))
    assert len(merged) <= len(events)


def test_merging_text_deltas_leaves_the_input_alone() -> None:
    events = [{"type": "text_delta", "delta": "a"}, {"type": "text_delta", "delta": "b"}]
    assert merge_text_deltas(events) == [{"type": "text_delta", "delta": "ab"}]
    assert events == [{"type": "text_delta", "delta": "a"}, {"type": "text_delta", "delta": "b"}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        (" 7d ", timedelta(days=7)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "1.5h", "-3d", "3 d", "3y", "3dd"])
def test_a_bad_duration_is_a_usage_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration"):
        parse_duration(text)


@settings(derandomize=True)
@given(st.datetimes(timezones=st.just(UTC)), st.uuids())
def test_a_cursor_decodes_to_the_row_it_was_made_from(created_at: datetime, job_id: uuid.UUID) -> None:
    cursor = encode_cursor({"created_at": created_at, "id": job_id})
    assert len(cursor) <= MAX_CURSOR_CHARS
    assert decode_cursor(cursor) == (created_at, job_id)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        _b64(b"not json"),
        _b64(b'["2026-01-01T00:00:00+00:00"]'),
        _b64(b'["2026-01-01T00:00:00", "6f1c2a9e-0000-4000-8000-000000000000"]'),  # no time zone
        _b64(b'["yesterday", "6f1c2a9e-0000-4000-8000-000000000000"]'),
        _b64(b'["2026-01-01T00:00:00+00:00", "not-a-uuid"]'),
        _b64(b"[" * 1100 + b"]" * 1100),
        "A" * (MAX_CURSOR_CHARS + 1),
    ],
)
def test_a_cursor_we_did_not_issue_is_a_400(cursor: str) -> None:
    with pytest.raises(ApiError) as refused:
        decode_cursor(cursor)
    assert (refused.value.status, refused.value.code) == (400, "invalid_cursor")


@pytest.mark.parametrize(
    "value",
    ["a\x00b", {"k\x00": 1}, {"k": ["x", {"y": "\x00"}]}, float("nan"), [float("inf")], {"n": -float("inf")}],
)
def test_what_postgres_cannot_store_is_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        STORABLE.validate_python(value, strict=True)


@pytest.mark.parametrize("value", ["plain", {"k": [1, 2.5, None, True, "\u00e9"]}, [], {}, 0.0])
def test_what_postgres_can_store_passes(value: object) -> None:
    assert STORABLE.validate_python(value, strict=True) == value


def test_a_notification_names_its_job_and_last_seq_and_may_carry_rows() -> None:
    job_id = str(uuid.uuid4())
    bare = parse_notification(f"{job_id}:41")
    assert (bare.job_id, bare.last_seq, bare.rows()) == (job_id, 41, None)

    # As the append statement builds it: each payload as its stored JSON text.
    rows = [[40, "text_delta", '{"type": "text_delta", "delta": "a:b"}', 1_700_000_000.5]]
    carried = parse_notification(f"{job_id}:40:{json.dumps(rows)}")
    [row] = carried.rows()
    assert (carried.job_id, carried.last_seq) == (job_id, 40)
    assert (row.seq, row.type, row.data) == (40, "text_delta", '{"type": "text_delta", "delta": "a:b"}')
    assert row.created_at == datetime.fromtimestamp(1_700_000_000.5, UTC)


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (psycopg.OperationalError("connection is lost"), True),  # no SQLSTATE: the connection broke
        (errors.AdminShutdown(), True),
        (errors.CannotConnectNow(), True),
        (errors.TooManyConnections(), True),
        (errors.ConnectionFailure(), True),
        (errors.QueryCanceled(), True),
        (errors.LockNotAvailable(), False),  # an OperationalError that a retry elsewhere handles
        (errors.UniqueViolation(), False),
        (errors.UndefinedTable(), False),
    ],
)
def test_which_driver_errors_mean_unavailable(error: psycopg.Error, unavailable: bool) -> None:
    assert is_unavailable(error) is unavailable
