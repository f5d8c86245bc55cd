"""Analytics over the event log, through the views of migration 0002."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runstream.db import queries
from runstream.db.connector import Pool, one_row
from runstream.db.status import Status

TOP_TOOLS = 10


@dataclass(frozen=True)
class Scope:
    """Which jobs a question is about: one tenant's, submitted in [since, until),
    maybe one session's, maybe one agent's."""

    tenant: str
    since: datetime | None = None
    until: datetime | None = None
    session_id: str | None = None
    agent: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "since": self.since,
            "until": self.until,
            "session_id": self.session_id,
            "agent": self.agent,
        }


def _percentiles(values: list[float] | None, count: int) -> dict[str, Any]:
    p50, p95 = values if values else (None, None)
    return {"count": count, "p50": p50, "p95": p95}


async def summary(pool: Pool, scope: Scope, *, top: int = TOP_TOOLS) -> dict[str, Any]:
    """Counts by status, p50/p95 of queue wait, time to first token and duration
    (seconds), the most used tools with their error rates, the retry rate, and
    jobs per agent."""
    async with pool.connection() as conn:
        cur = await conn.execute(queries.ANALYTICS_TIMINGS, scope.params())
        t = await one_row(cur)
        cur = await conn.execute(queries.ANALYTICS_TOOLS, {**scope.params(), "top": top})
        tools = await cur.fetchall()
        cur = await conn.execute(queries.ANALYTICS_BY_AGENT, scope.params())
        agents = await cur.fetchall()
    return {
        "jobs": t["jobs"],
        "by_status": {status: t[status] for status in Status},
        "queue_wait_s": _percentiles(t["queue_wait_s"], t["queue_wait_n"]),
        "ttft_s": _percentiles(t["ttft_s"], t["ttft_n"]),
        "duration_s": _percentiles(t["duration_s"], t["duration_n"]),
        "paused_s": _percentiles(t["paused_s"], t["paused_n"]),
        "retried_jobs": t["retried"],
        "retry_rate": t["retried"] / t["jobs"] if t["jobs"] else None,
        "tools": [
            {
                "tool_name": r["tool_name"],
                "calls": r["calls"],
                "errors": r["errors"],
                "error_rate": r["errors"] / r["calls"],
            }
            for r in tools
        ],
        "by_agent": [
            {
                "agent": r["agent"],
                "jobs": r["jobs"],
                "completed": r["completed"],
                "failed": r["failed"],
                "cancelled": r["cancelled"],
                "duration_p50_s": r["duration_p50_s"],
            }
            for r in agents
        ],
    }


async def job_metrics(pool: Pool, job_id: uuid.UUID, tenant: str) -> dict[str, Any] | None:
    async with pool.connection() as conn:
        cur = await conn.execute(queries.JOB_METRICS, {"id": job_id, "tenant": tenant})
        return await cur.fetchone()


async def jobs_by_status(pool: Pool) -> dict[str, int]:
    async with pool.connection() as conn:
        cur = await conn.execute(queries.JOBS_BY_STATUS)
        return {r["status"]: r["n"] for r in await cur.fetchall()}


async def jobs_timings(pool: Pool, job_ids: list[uuid.UUID], tenant: str) -> list[dict[str, Any]]:
    """Queue wait, time to first token and duration of each of the tenant's ``job_ids``
    (ids of other tenants, or of no job, are left out)."""
    async with pool.connection() as conn:
        cur = await conn.execute(queries.JOBS_TIMINGS, {"ids": job_ids, "tenant": tenant})
        return await cur.fetchall()


async def series(pool: Pool, scope: Scope, interval_s: int) -> list[dict[str, Any]]:
    """The scope's jobs per ``interval_s`` from ``scope.since`` to ``scope.until``
    (both set): outcomes, retried jobs, p50/p95 of time to first token and duration."""
    async with pool.connection() as conn:
        cur = await conn.execute(queries.ANALYTICS_SERIES, {**scope.params(), "interval_s": interval_s})
        rows = await cur.fetchall()
    return [
        {
            "start": r["start"].isoformat(),
            "jobs": r["jobs"],
            "by_status": {status: r[status] for status in Status},
            "retried_jobs": r["retried"],
            "ttft_s": _percentiles(r["ttft_s"], r["ttft_n"]),
            "duration_s": _percentiles(r["duration_s"], r["duration_n"]),
        }
        for r in rows
    ]
