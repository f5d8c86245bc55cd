"""Connections: the URL forms each driver needs, and the pools.

``DATABASE_URL`` is a plain ``postgresql://`` URL. psycopg takes it as is for
queries and for the LISTEN connection (db/listener.py); SQLAlchemy (Alembic)
wants ``postgresql+psycopg://``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeVar

import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from runstream.db.errors import DatabaseUnavailable, is_unavailable

# Runstream's connections answer rows as dicts (open_pool's row factory); the
# types say so, so a row's columns are read by name. A cursor of its own row
# factory answers a typed row instead (db.jobs.job_rows).
Connection: TypeAlias = AsyncConnection[DictRow]
Pool: TypeAlias = AsyncConnectionPool[Connection]
Row = TypeVar("Row")


def plain_url(database_url: str) -> str:
    """Strip any SQLAlchemy driver suffix: ``postgresql+psycopg://`` → ``postgresql://``."""
    url = make_url(database_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_url(database_url: str) -> str:
    url = make_url(database_url)
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


async def one_row(cursor: AsyncCursor[Row]) -> Row:
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

# A check that gets no answer in this long (a server that stalls) counts as failed.
CHECK_TIMEOUT_S = 2.0


class RecoveringPool(AsyncConnectionPool[Connection]):
    """A fixed-size pool that drops every connection at once when one is found dead.

    A connection found dead on checkout almost always means the server restarted
    or failed over, which kills them all. psycopg_pool alone would hand out the
    other dead ones one by one, sleeping longer between each (1, 2, 4, 8 s...),
    so that a request after a short restart waits out the pool's timeout. Here
    the first dead one drains the pool (idle connections closed, busy ones
    replaced when returned) and new connections are opened at once.
    """

    def __init__(self, conninfo: str, size: int, *, name: str, timeout: float, prepared_statements: bool):
        self._returned_at: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()
        self._opened_at: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()
        self._last_drain = 0.0
        kwargs: dict[str, Any] = {"row_factory": dict_row, "autocommit": True, "application_name": name}
        if not prepared_statements:
            kwargs["prepare_threshold"] = None
        super().__init__(
            conninfo,
            connection_class=Connection,
            min_size=size,
            max_size=size,
            kwargs=kwargs,
            name=name,
            open=False,
            timeout=timeout,
            configure=self._note_opened,
            check=self._check_if_idle,
            reset=self._note_returned,
        )

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Connection]:
        """A pooled connection, as psycopg_pool lends it, but a failure that
        means the database is unavailable (a checkout that times out included)
        leaves as ``DatabaseUnavailable``: the floors above never see the driver."""
        try:
            async with super().connection(timeout) as conn:
                yield conn
        except psycopg.Error as exc:
            if is_unavailable(exc):
                raise DatabaseUnavailable(str(exc) or type(exc).__name__) from exc
            raise

    async def _note_opened(self, conn: Connection) -> None:
        self._opened_at[conn] = time.monotonic()

    async def _note_returned(self, conn: Connection) -> None:
        self._returned_at[conn] = time.monotonic()

    async def _check_if_idle(self, conn: Connection) -> None:
        if time.monotonic() - self._returned_at.get(conn, 0.0) < CHECK_IDLE_AFTER_S:
            return
        try:
            await asyncio.wait_for(self.check_connection(conn), CHECK_TIMEOUT_S)
        except (psycopg.Error, TimeoutError):
            # Connections opened after the last drain are new enough: draining
            # again for each of the old ones that concurrent requests hold would
            # throw the new ones away too.
            if self._opened_at.get(conn, 0.0) > self._last_drain:
                self._last_drain = time.monotonic()
                await self.drain()
            raise


async def open_pool(
    database_url: str,
    size: int,
    *,
    name: str = "runstream",
    timeout: float = 30.0,
    prepared_statements: bool = True,
) -> Pool:
    """A fixed-size pool: its connection count never depends on the load. A
    checkout waits at most ``timeout`` s, then raises ``DatabaseUnavailable``
    (the API answers 503 ``database_unavailable``).
    Without ``prepared_statements`` nothing is prepared on the server (behind a
    pooler in transaction mode, where a statement prepared in one transaction
    is unknown to the server connection of the next)."""
    pool = RecoveringPool(
        plain_url(database_url), size, name=name, timeout=timeout, prepared_statements=prepared_statements
    )
    await pool.open(wait=True, timeout=30)
    return pool
