"""The database's list of job statuses is the enum's: the CHECK constraint on
``jobs.status``, as the migrations left it, allows exactly ``Status``'s values.
A status added to the enum needs a migration, and this fails until it has one."""

from __future__ import annotations

import re

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from runstream.db import jobs
from runstream.db.status import Status


async def test_the_status_check_constraint_allows_exactly_the_enum_s_values(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT a.attname AS column_name, pg_get_constraintdef(c.oid) AS definition"
            " FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)"
            " WHERE c.conrelid = 'jobs'::regclass AND c.contype = 'c' AND c.conname = 'jobs_status_check'"
        )
        [constraint] = await cur.fetchall()
    assert constraint["column_name"] == "status"
    # CHECK ((status = ANY (ARRAY['pending'::text, ...])))
    assert sorted(re.findall(r"'(\w+)'::text", constraint["definition"])) == sorted(Status)

    # And it is the one in force: each of the enum's values is taken, another is refused.
    job = await jobs.create_job(pool, tenant="statuses", message="m", model="offline")
    async with pool.connection() as conn:
        for status in Status:
            with pytest.raises(Rollback):
                async with conn.transaction():
                    await conn.execute("UPDATE jobs SET status = %s WHERE id = %s", [status, job.id])
                    raise Rollback
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute("UPDATE jobs SET status = 'asleep' WHERE id = %s", [job.id])
    assert (await jobs.get_job(pool, job.id, "statuses")) == job


class Rollback(Exception):
    """Leaves a transaction that took its statement: the job stays as it was."""
