"""Where the tests find the machine's services. Override with RUNSTREAM_TEST_* variables."""

import tempfile
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class TestServices(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNSTREAM_TEST_")

    # A database the tests may connect to in order to create and drop their own.
    admin_database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    # Where the browser tests save the screenshots docs/ shows. Unset, they go to
    # a temporary folder, so a test run leaves the work tree as it found it;
    # RUNSTREAM_TEST_SCREENSHOTS_DIR=docs refreshes the pictures.
    screenshots_dir: Path | None = None

    def screenshot_path(self, name: str) -> str:
        folder = self.screenshots_dir or Path(tempfile.gettempdir()) / "runstream-screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / name)


services = TestServices()


def unreachable_services() -> list[str]:
    """The machine's services that do not answer now, each with the reason (empty: all up)."""
    # Imported here: the unit tests import this module and need none of the drivers.
    import kombu
    import psycopg
    import redis

    problems = []
    try:
        psycopg.connect(services.admin_database_url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        problems.append(f"Postgres ({services.admin_database_url}): {exc}".strip())
    try:
        redis.Redis.from_url(services.redis_url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        problems.append(f"Redis ({services.redis_url}): {exc}")
    try:
        with kombu.Connection(services.rabbitmq_url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu raises the transport's own errors
        problems.append(f"RabbitMQ ({services.rabbitmq_url}): {exc}")
    return problems
