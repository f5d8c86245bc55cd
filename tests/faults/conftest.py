"""Fault tests: real worker, API, Postgres and broker processes, broken on purpose.

Each module gets a database of its own on the shared Postgres (or a throwaway
cluster, when the test restarts Postgres), so the reapers of its workers see
only its jobs, and its workers use a queue of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import pytest_asyncio

from tests.conftest import create_database, drop_database


@pytest.fixture(scope="module")
def fault_database() -> Iterator[str]:
    url = create_database("rs_fault")
    yield url
    drop_database(url)


@pytest_asyncio.fixture(loop_scope="session")
async def db(fault_database: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """A plain connection to the module's database, for checking what jobs left behind."""
    async with await psycopg.AsyncConnection.connect(fault_database, autocommit=True) as conn:
        yield conn
