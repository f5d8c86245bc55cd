"""Connections: the URL forms each driver needs, and the pools.

``DATABASE_URL`` is a plain ``postgresql://`` URL. psycopg takes it as is for
queries; SQLAlchemy (Alembic) wants ``postgresql+psycopg://``; asyncpg (the API's
LISTEN connection) takes the plain form.
"""

from __future__ import annotations

import time
import weakref
from typing import TypeAlias

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

# Runstream's connections answer rows as dicts (open_pool's row factory); the
# types say so, so a row's columns are read by name.
Connection: TypeAlias = AsyncConnection[DictRow]
Pool: TypeAlias = AsyncConnectionPool[Connection]


def plain_url(database_url: str) -> str:
    """Strip any SQLAlchemy driver suffix: ``postgresql+psycopg://`` → ``postgresql://``."""
    url = make_url(database_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_url(database_url: str) -> str:
    url = make_url(database_url)
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


async def one_row(cursor: AsyncCursor[DictRow]) -> DictRow:
    """The row of a statement that always returns exactly one (an aggregate, an
    INSERT ... RETURNING): never None, so its columns are read as they are."""
    row = await cursor.fetchone()
    if row is None:
        raise RuntimeError("the statement returned no row")
    return row


# A connection back in the pool for less than this is taken as alive without a
# round trip to the server: under load (the hot path: appends, live reads) no
# checkout pays for a check, while one that sat idle long enough to have been
# dropped unnoticed is checked. A connection that dies within this window fails
# its query, which the callers retry (the writer) or recover from (the hub).
CHECK_IDLE_AFTER_S = 1.0
_returned_at: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()


async def _note_returned(conn: Connection) -> None:
    _returned_at[conn] = time.monotonic()


async def _check_if_idle(conn: Connection) -> None:
    if time.monotonic() - _returned_at.get(conn, 0.0) >= CHECK_IDLE_AFTER_S:
        await AsyncConnectionPool.check_connection(conn)


async def open_pool(database_url: str, size: int, *, name: str = "runstream") -> Pool:
    """A fixed-size pool: its connection count never depends on the load."""
    pool = AsyncConnectionPool(
        plain_url(database_url),
        connection_class=Connection,
        min_size=size,
        max_size=size,
        kwargs={"row_factory": dict_row, "autocommit": True, "application_name": name},
        name=name,
        open=False,
        # A connection the server dropped (restart, failover) is replaced, not reused.
        check=_check_if_idle,
        reset=_note_returned,
    )
    await pool.open(wait=True, timeout=30)
    return pool
