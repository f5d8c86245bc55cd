"""Alembic migrations: the schema's only owner. Run with ``runstream migrate``."""
