"""Connections: the URL forms each driver needs, and the pools.

``DATABASE_URL`` is a plain ``postgresql://`` URL. psycopg takes it as is for
queries; SQLAlchemy (Alembic) wants ``postgresql+psycopg://``; asyncpg (the API's
LISTEN connection) takes the plain form.
"""

from __future__ import annotations

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url


def plain_url(database_url: str) -> str:
    """Strip any SQLAlchemy driver suffix: ``postgresql+psycopg://`` → ``postgresql://``."""
    url = make_url(database_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_url(database_url: str) -> str:
    url = make_url(database_url)
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


async def open_pool(database_url: str, size: int, *, name: str = "runstream") -> AsyncConnectionPool:
    """A fixed-size pool: its connection count never depends on the load."""
    pool = AsyncConnectionPool(
        plain_url(database_url),
        min_size=size,
        max_size=size,
        kwargs={"row_factory": dict_row, "autocommit": True, "application_name": name},
        name=name,
        open=False,
        # A connection the server dropped (restart, failover) is replaced, not reused.
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=True, timeout=30)
    return pool
