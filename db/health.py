"""Whether the database answers: the readiness probe's database check, and dev mode's wait for its server."""

from __future__ import annotations

import psycopg

from runstream.db import queries
from runstream.db.connector import Pool


async def ping(pool: Pool, timeout_s: float) -> None:
    """Raises when no pooled connection answers ``SELECT 1`` within ``timeout_s``."""
    async with pool.connection(timeout=timeout_s) as conn:
        await conn.execute(queries.PING)


def accepts_connections(database_url: str, timeout_s: float) -> bool:
    """Whether the server at ``database_url`` takes a connection within
    ``timeout_s`` (a server still starting up does not)."""
    try:
        psycopg.connect(database_url, connect_timeout=max(1, round(timeout_s))).close()
    except psycopg.OperationalError:
        return False
    return True
