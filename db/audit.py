"""Read the whole log back, for checking it (``runstream soak``)."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg_pool import AsyncConnectionPool

from runstream.db import queries


async def all_jobs(pool: AsyncConnectionPool) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(queries.AUDIT_JOBS)
        return list(await cur.fetchall())


async def job_log(pool: AsyncConnectionPool, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every event row of the job, oldest first: seq, attempt, type, data (the payload as sent)."""
    async with pool.connection() as conn:
        cur = await conn.execute(queries.AUDIT_EVENTS, {"job_id": job_id})
        return list(await cur.fetchall())
