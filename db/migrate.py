"""Bring a database to the newest schema with Alembic."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from runstream.db.connector import sqlalchemy_url


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "runstream.migrations:")
    # '%' is interpolation syntax in Alembic's config parser.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    """Idempotent: an up-to-date database is left as it is."""
    command.upgrade(alembic_config(database_url), "head")
