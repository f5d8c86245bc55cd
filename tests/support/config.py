"""Where the tests find the machine's services. Override with RUNSTREAM_TEST_* variables."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class TestServices(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNSTREAM_TEST_")

    # A database the tests may connect to in order to create and drop their own.
    admin_database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672//"


services = TestServices()
