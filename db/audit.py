"""Read the whole log back, for checking it (``runstream soak``)."""

from __future__ import annotations

import uuid

from psycopg.rows import DictRow

from runstream.db import queries
from runstream.db.connector import Pool


async def all_jobs(pool: Pool) -> list[DictRow]:
    async with pool.connection() as conn:
        cur = await conn.execute(queries.AUDIT_JOBS)
        return list(await cur.fetchall())


async def job_log(pool: Pool, job_id: uuid.UUID) -> list[DictRow]:
    """Every event row of the job, oldest first: seq, attempt, type, data (the payload as sent)."""
    async with pool.connection() as conn:
        cur = await conn.execute(queries.AUDIT_EVENTS, {"job_id": job_id})
        return list(await cur.fetchall())
