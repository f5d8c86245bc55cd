"""Webhook deliveries: one row per job state to announce (written by the
jobs_ended trigger in the transaction that reaches the state), one row per try."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runstream.db import queries
from runstream.db.connector import Pool
from runstream.db.jobs import JobRow, job_rows
from runstream.db.status import Status


@dataclass(frozen=True)
class Delivery:
    """A delivery taken for one attempt, with the job as it is now."""

    webhook_id: str
    url: str
    job_status: Status
    attempt: int
    job: JobRow
    # When the job reached the state announced.
    created_at: datetime


async def claim_delivery(pool: Pool, webhook_id: str, *, max_attempts: int, lease_s: float) -> Delivery | None:
    """The delivery, for its next attempt; None when it is done, out of attempts,
    not due yet, or being tried elsewhere."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            queries.CLAIM_WEBHOOK, {"webhook_id": webhook_id, "max_attempts": max_attempts, "lease_s": lease_s}
        )
        row = await cur.fetchone()
        if row is None:
            return None
        job = await (await job_rows(conn).execute(queries.JOB_BY_ID, {"id": row["job_id"]})).fetchone()
        if job is None:  # pruned with its deliveries' job since: nothing to send
            return None
    return Delivery(row["webhook_id"], row["url"], Status(row["job_status"]), row["attempts"], job, row["created_at"])


async def record_attempt(
    pool: Pool,
    delivery: Delivery,
    *,
    outcome: str,
    status: str,
    duration_ms: float,
    response_status: int | None = None,
    error: str | None = None,
    retry_in_s: float = 0.0,
) -> None:
    """Record one attempt (``outcome``: delivered, failed, refused) and leave the
    delivery ``status`` (pending: tried again in ``retry_in_s``; delivered; failed)."""
    params = {
        "webhook_id": delivery.webhook_id,
        "attempt": delivery.attempt,
        "outcome": outcome,
        "response_status": response_status,
        "duration_ms": duration_ms,
        "error": error,
        "status": status,
        "retry_in_s": retry_in_s,
    }
    async with pool.connection() as conn:
        await conn.execute(queries.RECORD_WEBHOOK_ATTEMPT, params)


async def mark_overdue_for_dispatch(
    pool: Pool, *, pending_timeout_s: float, max_attempts: int, limit: int
) -> list[str]:
    """Deliveries whose message was lost, each marked as dispatched now; the caller
    sends them. Those out of attempts are failed instead."""
    params = {"pending_timeout_s": pending_timeout_s, "max_attempts": max_attempts, "limit": limit}
    async with pool.connection() as conn:
        cur = await conn.execute(queries.REAP_WEBHOOKS, params)
        return [row["webhook_id"] for row in await cur.fetchall() if row["status"] == "pending"]


async def job_deliveries(pool: Pool, job_id: uuid.UUID) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(queries.JOB_WEBHOOK_DELIVERIES, {"job_id": job_id})
        return await cur.fetchall()
