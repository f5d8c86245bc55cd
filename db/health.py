"""Whether the database answers: the readiness probe's database check."""

from __future__ import annotations

from runstream.db import queries
from runstream.db.connector import Pool


async def ping(pool: Pool, timeout_s: float) -> None:
    """Raises when no pooled connection answers ``SELECT 1`` within ``timeout_s``."""
    async with pool.connection(timeout=timeout_s) as conn:
        await conn.execute(queries.PING)
