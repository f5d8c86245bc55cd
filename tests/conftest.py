"""Session fixtures: a fresh database, and real worker and API processes.

Nothing here is mocked. When Postgres or Redis is not reachable the tests fail
(never skip): a green run must mean the real thing worked.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import pytest_asyncio
import redis
from alembic import command
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from runstream.core.settings import child_environment
from runstream.db.connector import open_pool
from runstream.db.migrate import alembic_config
from tests.support.config import services, unreachable_services
from tests.support.processes import ApiServer, ServiceProcess, start_api, start_worker
from tests.support.waiting import wait_until

# How long a run waits for Postgres, Redis and RabbitMQ to answer before it fails.
SERVICES_START_TIMEOUT_S = 90.0


def _database_url(name: str) -> str:
    return make_url(services.admin_database_url).set(database=name).render_as_string(hide_password=False)


def create_database(prefix: str = "rs_test", *, revision: str | None = "head") -> str:
    """A new database with a unique name, migrated to ``revision`` (None: left
    empty); returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(services.admin_database_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        pytest.fail(f"Postgres is required for the tests and is not reachable: {exc}", pytrace=False)
    database_url = _database_url(name)
    if revision is not None:
        command.upgrade(alembic_config(database_url), revision)
    return database_url


def drop_database(database_url: str) -> None:
    name = make_url(database_url).database
    with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def service_environment(database_url: str, broker_url: str, queue: str, data_dir: Path) -> dict[str, str]:
    # Nothing from the developer's own settings may leak in and point a test at
    # the wrong database or broker.
    return child_environment(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url,
        RUNSTREAM_QUEUE=queue,
        RUNSTREAM_OFFLINE_DELAY_MS="0",
        RUNSTREAM_DATA_DIR=str(data_dir),
        # No reaper. The shared test database holds jobs kept pending on purpose
        # (APIs on queues no worker consumes) and runs a test plays the worker of;
        # a reaper would take them for lost a minute later and run them under the
        # test's feet. The fault tests, each on a database of its own, turn it on.
        RUNSTREAM_REAPER_INTERVAL_S="86400",
    )


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def queue_name() -> Iterator[str]:
    name = f"rs-test-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(services.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is required for the tests and is not reachable: {exc}", pytrace=False)
    yield name
    client.delete(name, *client.keys(f"{name}*"))


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def service_env(database_url: str, queue_name: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return service_environment(database_url, services.redis_url, queue_name, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def worker(service_env: dict[str, str], log_dir: Path) -> Iterator[ServiceProcess]:
    process = start_worker(service_env, log_dir)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api(service_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    server = start_api(service_env, log_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def idle_api(service_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    """An API whose jobs no worker takes (its queue has no consumer): they stay
    pending until a test plays the worker with the db layer."""
    env = {**service_env, "RUNSTREAM_QUEUE": service_env["RUNSTREAM_QUEUE"] + "-idle"}
    server = start_api(env, log_dir, name="idle-api")
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(database_url, 4, name="runstream-tests")
    yield pool
    await pool.close()


@pytest_asyncio.fixture(loop_scope="session")
async def client(api: ApiServer, worker: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the running API, with a worker behind it."""
    async with httpx.AsyncClient(base_url=api.url, timeout=30.0) as http:
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def http(idle_api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the API with no worker behind it."""
    async with httpx.AsyncClient(base_url=idle_api.url, timeout=30.0) as client:
        yield client


def _needs_services(item: pytest.Item) -> bool:
    return not item.nodeid.startswith("tests/unit/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The unit layer first: it needs no service and fails in seconds.
    items.sort(key=lambda item: 0 if not _needs_services(item) else 1)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Give the machine's services a minute to come up (a fresh CI machine may still be
    starting them), then stop the whole run with one clear message if one never answers:
    a missing service fails the run, it never skips tests."""
    if not any(_needs_services(item) for item in session.items):
        return
    try:
        wait_until(
            lambda: not unreachable_services(),
            timeout=SERVICES_START_TIMEOUT_S,
            interval=1.0,
            what="Postgres, Redis and RabbitMQ",
        )
    except AssertionError:
        problems = "\n  ".join(unreachable_services())
        pytest.exit(
            f"the tests need these services and they did not answer for {SERVICES_START_TIMEOUT_S:.0f} s:\n  {problems}",
            returncode=1,
        )
