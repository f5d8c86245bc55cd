"""The data floor's one error: what means "the database is unavailable" leaves
``db/`` as ``DatabaseUnavailable``, on a real server; a defect keeps its own type."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg import errors

from runstream.db.connector import open_pool
from runstream.db.errors import DatabaseUnavailable

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_checkout_that_waits_too_long_is_unavailable(database_url: str) -> None:
    pool = await open_pool(database_url, 1, name="runstream-test-errors", timeout=0.2)
    try:
        async with pool.connection():
            with pytest.raises(DatabaseUnavailable) as raised:
                async with pool.connection():
                    pass
        assert isinstance(raised.value.__cause__, psycopg.OperationalError)
    finally:
        await pool.close()


async def test_a_connection_killed_under_a_query_is_unavailable(database_url: str) -> None:
    pool = await open_pool(database_url, 1, name="runstream-test-errors")
    try:
        async with pool.connection() as conn:
            pid = (await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone())["pid"]
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(DatabaseUnavailable):
            async with pool.connection() as conn:
                # The pool lends it without a check (it was returned just now); the query finds it dead.
                await conn.execute("SELECT 1")
        # The pool drained and reconnected: the next call is served.
        async with asyncio.timeout(10), pool.connection() as conn:
            assert (await (await conn.execute("SELECT 1 AS one")).fetchone())["one"] == 1
    finally:
        await pool.close()


async def test_a_defect_keeps_its_own_type(pool) -> None:
    with pytest.raises(errors.UndefinedTable):
        async with pool.connection() as conn:
            await conn.execute("SELECT * FROM no_such_table")
