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
