"""The event log: the only code that writes ``job_events``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from db import queries
from runstream.metrics import APPEND_SECONDS, EVENTS_APPENDED

TERMINAL_TYPES = frozenset({"done", "error"})


@dataclass(frozen=True)
class AppendBatch:
    """Events for one job, and the guards and transition that go with them."""

    job_id: uuid.UUID
    payloads: Sequence[dict[str, Any]]
    from_statuses: tuple[str, ...] = ("running",)
    attempt: int | None = None
    expected_last_seq: int | None = None
    new_status: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class AppendResult:
    """``applied`` is False when a guard refused the batch (nothing was written)."""

    applied: bool
    last_seq: int | None = None
    status: str | None = None
    cancel_requested_at: datetime | None = None

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_requested_at is not None


@dataclass(frozen=True)
class EventRow:
    seq: int
    type: str
    data: str  # the payload as stored: one line of JSON, sent on the wire as is
    created_at: datetime | None = None  # when it was appended (delivery lag)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


def _params(batch: AppendBatch) -> dict[str, Any]:
    return {
        "job_id": batch.job_id,
        "n": len(batch.payloads),
        "payloads": json.dumps(list(batch.payloads), ensure_ascii=False),
        "from_statuses": list(batch.from_statuses),
        "attempt": batch.attempt,
        "expected_last_seq": batch.expected_last_seq,
        "new_status": batch.new_status,
        "error": batch.error,
    }


async def append_in(conn: AsyncConnection, batches: Sequence[AppendBatch]) -> list[AppendResult]:
    """Append several jobs' batches inside the caller's transaction.

    Jobs are locked in id order so two writers that share jobs cannot deadlock.
    Statements are pipelined: one round trip for all of them.
    """
    order = sorted(range(len(batches)), key=lambda i: batches[i].job_id)
    cursors = []
    async with conn.pipeline():
        for i in order:
            cur = conn.cursor()
            await cur.execute(queries.APPEND_EVENTS, _params(batches[i]))
            cursors.append((i, cur))
    results: list[AppendResult | None] = [None] * len(batches)
    for i, cur in cursors:
        row = await cur.fetchone()
        results[i] = (
            AppendResult(True, row["last_seq"], row["status"], row["cancel_requested_at"])
            if row
            else AppendResult(False)
        )
    return results  # type: ignore[return-value]


async def append_many(pool: AsyncConnectionPool, batches: Sequence[AppendBatch]) -> list[AppendResult]:
    """One transaction, one commit for every batch: the group commit. Pipelined:
    BEGIN travels with the statements, so it costs two round trips in all."""
    started = time.perf_counter()
    async with pool.connection() as conn, conn.pipeline(), conn.transaction():
        results = await append_in(conn, batches)
    APPEND_SECONDS.observe(time.perf_counter() - started)
    EVENTS_APPENDED.inc(sum(len(b.payloads) for b, r in zip(batches, results, strict=True) if r.applied))
    return results


async def append_events(
    pool: AsyncConnectionPool,
    job_id: uuid.UUID,
    payloads: Sequence[dict[str, Any]],
    **guards: Any,
) -> AppendResult:
    """Append ``payloads`` to one job's log in one transaction (see AppendBatch for guards)."""
    [result] = await append_many(pool, [AppendBatch(job_id, payloads, **guards)])
    return result


async def read_events(
    pool: AsyncConnectionPool, job_id: uuid.UUID, after_seq: int, limit: int
) -> list[EventRow]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            queries.READ_EVENTS, {"job_id": job_id, "after_seq": after_seq, "limit": limit}
        )
        return [EventRow(r["seq"], r["type"], r["data"], r["created_at"]) for r in await cur.fetchall()]


async def read_events_of_jobs(
    pool: AsyncConnectionPool, after_seqs: dict[uuid.UUID, int], limit: int
) -> dict[uuid.UUID, list[EventRow]]:
    """``read_events`` for several jobs in one query: {job_id: rows after its seq, at most ``limit``}."""
    params = {"job_ids": list(after_seqs), "after_seqs": list(after_seqs.values()), "limit": limit}
    async with pool.connection() as conn:
        cur = await conn.execute(queries.READ_EVENTS_OF_JOBS, params)
        rows: dict[uuid.UUID, list[EventRow]] = {job_id: [] for job_id in after_seqs}
        for r in await cur.fetchall():
            rows[r["job_id"]].append(EventRow(r["seq"], r["type"], r["data"], r["created_at"]))
        return rows
