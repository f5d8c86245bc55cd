"""Cluster-level chores, on an administrative connection (not the app's pools)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from runstream.db import queries


def ensure_database(admin_url: str, name: str) -> bool:
    """Create database ``name`` unless it exists. True when it was created."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute(queries.DATABASE_EXISTS, {"name": name}).fetchone():
            return False
        # CREATE DATABASE takes no parameters: the name is quoted as an identifier.
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True
