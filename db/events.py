"""The event log: the only code that writes ``job_events``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from runstream.core.metrics import APPEND_SECONDS, EVENTS_APPENDED
from runstream.db import queries
from runstream.db.connector import Connection, Pool
from runstream.db.status import Status

# The event types that end an attempt's stream; named here only (the writer, the
# streams and the bench all ask this set).
TERMINAL_TYPES = frozenset({"done", "error"})


@dataclass(frozen=True)
class AppendBatch:
    """Events for one job, and the guards and transition that go with them."""

    job_id: uuid.UUID
    payloads: Sequence[dict[str, Any]]
    from_statuses: tuple[Status, ...] = (Status.RUNNING,)
    attempt: int | None = None
    expected_last_seq: int | None = None
    new_status: Status | None = None
    error: str | None = None


@dataclass(frozen=True)
class AppendResult:
    """``applied`` is False when a guard refused the batch (nothing was written)."""

    applied: bool
    last_seq: int | None = None
    status: Status | None = None
    cancel_requested_at: datetime | None = None

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_requested_at is not None


class EventRow(NamedTuple):
    """A NamedTuple, not a dataclass: the hub makes one per row of every NOTIFY,
    on the delivery path, and a tuple is built several times faster."""

    seq: int
    type: str
    data: str  # the payload as stored: one line of JSON, sent on the wire as is
    created_at: datetime | None = None  # when it was appended (delivery lag)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


def batches_json(batches: Sequence[AppendBatch]) -> str:
    """APPEND_EVENTS's one parameter. A single string for the driver to pass on:
    adapting an array per field cost more client CPU than the commit's round trip."""
    return json.dumps(
        [
            {
                "job_id": str(b.job_id),
                "payloads": b.payloads,
                "from_statuses": b.from_statuses,
                "attempt": b.attempt,
                "expected_last_seq": b.expected_last_seq,
                "new_status": b.new_status,
                "error": b.error,
            }
            for b in batches
        ],
        ensure_ascii=False,
    )


def job_batch_params(batch: AppendBatch) -> dict[str, Any]:
    """APPEND_JOB_EVENTS's parameters: one batch's fields as they are."""
    return {
        "job_id": batch.job_id,
        "payloads": json.dumps(batch.payloads, ensure_ascii=False),
        "n": len(batch.payloads),
        "from_statuses": list(batch.from_statuses),
        "attempt": batch.attempt,
        "expected_last_seq": batch.expected_last_seq,
        "new_status": batch.new_status,
        "error": batch.error,
    }


async def append_in(conn: Connection, batches: Sequence[AppendBatch]) -> list[AppendResult]:
    """Append several jobs' batches inside the caller's transaction, in one statement
    (at most one batch per job; one batch alone goes by APPEND_JOB_EVENTS, which
    skips the JSON document and the lock-ordering step that only several jobs need).
    A batch whose guard refused it is ``applied=False``."""
    if len(batches) == 1:
        cur = await conn.execute(queries.APPEND_JOB_EVENTS, job_batch_params(batches[0]))
    elif len({b.job_id for b in batches}) != len(batches):
        raise ValueError("append_in takes at most one batch per job")
    else:
        cur = await conn.execute(queries.APPEND_EVENTS, {"batches": batches_json(batches)})
    rows = {row["id"]: row for row in await cur.fetchall()}
    return [
        AppendResult(True, row["last_seq"], Status(row["status"]), row["cancel_requested_at"])
        if (row := rows.get(b.job_id)) is not None
        else AppendResult(False)
        for b in batches
    ]


async def append_many(pool: Pool, batches: Sequence[AppendBatch]) -> list[AppendResult]:
    """One statement for every batch: the group commit. The pool's connections are
    in autocommit, so the statement is its own transaction (all batches or none,
    the NOTIFY sent at its commit) and costs one round trip; an explicit
    BEGIN/COMMIT would add two."""
    started = time.perf_counter()
    async with pool.connection() as conn:
        results = await append_in(conn, batches)
    APPEND_SECONDS.observe(time.perf_counter() - started)
    EVENTS_APPENDED.inc(sum(len(b.payloads) for b, r in zip(batches, results, strict=True) if r.applied))
    return results


async def append_events(
    pool: Pool,
    job_id: uuid.UUID,
    payloads: Sequence[dict[str, Any]],
    **guards: Any,
) -> AppendResult:
    """Append ``payloads`` to one job's log in one transaction (see AppendBatch for guards)."""
    [result] = await append_many(pool, [AppendBatch(job_id, payloads, **guards)])
    return result


async def read_events(pool: Pool, job_id: uuid.UUID, after_seq: int, limit: int) -> list[EventRow]:
    async with pool.connection() as conn:
        cur = await conn.execute(queries.READ_EVENTS, {"job_id": job_id, "after_seq": after_seq, "limit": limit})
        return [EventRow(r["seq"], r["type"], r["data"], r["created_at"]) for r in await cur.fetchall()]


async def read_events_of_jobs(
    pool: Pool, after_seqs: dict[uuid.UUID, int], limit: int
) -> dict[uuid.UUID, list[EventRow]]:
    """``read_events`` for several jobs in one query: {job_id: rows after its seq, at most ``limit``}."""
    params = {"job_ids": list(after_seqs), "after_seqs": list(after_seqs.values()), "limit": limit}
    async with pool.connection() as conn:
        cur = await conn.execute(queries.READ_EVENTS_OF_JOBS, params)
        rows: dict[uuid.UUID, list[EventRow]] = {job_id: [] for job_id in after_seqs}
        for r in await cur.fetchall():
            rows[r["job_id"]].append(EventRow(r["seq"], r["type"], r["data"], r["created_at"]))
        return rows


class Notification(NamedTuple):
    """A NOTIFY of APPEND_EVENTS (or APPEND_JOB_EVENTS): the job's ``last_seq`` after the commit, and the
    commit's rows of the job when they fitted in the payload (``rows_json``, parsed
    by ``rows`` only for a job someone follows)."""

    job_id: str
    last_seq: int
    rows_json: str | None

    def rows(self) -> list[EventRow] | None:
        if self.rows_json is None:
            return None
        return [
            EventRow(seq, type_, data, datetime.fromtimestamp(epoch, UTC))
            for seq, type_, data, epoch in json.loads(self.rows_json)
        ]


def parse_notification(payload: str) -> Notification:
    """``<job_id>:<last_seq>[:<rows>]`` (queries.APPEND_EVENTS, APPEND_JOB_EVENTS)."""
    job_id, last_seq, *rows_json = payload.split(":", 2)
    return Notification(job_id, int(last_seq), rows_json[0] if rows_json else None)


async def committed_earlier(pool: Pool, batch: AppendBatch) -> AppendResult | None:
    """Whether ``batch`` (guarded by ``attempt`` and ``expected_last_seq``) is already
    in the log: the result it had, or None when it is not.

    For a writer whose commit failed with a lost connection: the commit may have
    happened, and the retry is then refused by ``expected_last_seq``. The batch
    counts as written when the rows right after ``expected_last_seq`` are of its
    attempt and are its payloads; the writer is the only one of its (job,
    attempt), so nobody else could have written those.
    """
    assert batch.attempt is not None and batch.expected_last_seq is not None
    params = {
        "job_id": batch.job_id,
        "attempt": batch.attempt,
        "after_seq": batch.expected_last_seq,
        "n": len(batch.payloads),
    }
    async with pool.connection() as conn:
        cur = await conn.execute(queries.ATTEMPT_EVENTS_AFTER, params)
        row = await cur.fetchone()
    if row is None or row["payloads"] != list(batch.payloads):
        return None
    return AppendResult(
        True, batch.expected_last_seq + len(batch.payloads), Status(row["status"]), row["cancel_requested_at"]
    )
