"""The agent registry as workers recorded it (tasks.registry), for the API."""

from __future__ import annotations

from typing import Any

from runstream.db import queries
from runstream.db.connector import Pool


async def record_agents(pool: Pool, agents: list[dict[str, Any]]) -> None:
    """Each ``{name, import_path, kind, description}`` replaces the record of its name."""
    async with pool.connection() as conn, conn.transaction():
        for agent in agents:
            await conn.execute(queries.RECORD_AGENT, agent)


async def recorded_agents(pool: Pool, names: list[str]) -> dict[str, dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(queries.RECORDED_AGENTS, {"names": names})
        return {row["name"]: row for row in await cur.fetchall()}
