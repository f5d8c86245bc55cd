"""Reading and clearing a session's conversation (the runs that share a session_id)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from psycopg.rows import class_row

from runstream.db import queries
from runstream.db.connector import Pool
from runstream.db.conversation import LoggedEvent, Turn
from runstream.db.jobs import JobRow


async def _turns(pool: Pool, params: dict[str, Any]) -> list[Turn]:
    """Runs oldest first, each with its events (read after the job rows, so an
    event can be newer than its job's status, never the other way round)."""
    async with pool.connection() as conn:
        runs = conn.cursor(row_factory=class_row(Turn))
        turns = list(reversed(await (await runs.execute(queries.SESSION_RUNS, params)).fetchall()))
        if not turns:
            return []
        cur = await conn.execute(queries.RUN_EVENTS, {"ids": [turn.job_id for turn in turns]})
        events: dict[uuid.UUID, list[LoggedEvent]] = defaultdict(list)
        for row in await cur.fetchall():
            events[row["job_id"]].append(
                LoggedEvent(row["seq"], row["attempt"], row["type"], row["payload"], row["created_at"])
            )
    for turn in turns:
        turn.events = events[turn.job_id]
    return turns


async def conversation(pool: Pool, *, tenant: str, session_id: str, limit: int) -> tuple[list[Turn], bool]:
    """The newest ``limit`` runs of the session, oldest first, and whether older ones exist."""
    turns = await _turns(
        pool,
        {
            "tenant": tenant,
            "session_id": session_id,
            "before_created_at": None,
            "before_id": None,
            "finished_only": False,
            "limit": limit + 1,
        },
    )
    return (turns[1:], True) if len(turns) > limit else (turns, False)


async def turns_before(pool: Pool, job: JobRow, limit: int) -> list[Turn]:
    """The agent's context for ``job``: the newest ``limit`` finished runs of its
    session submitted before it. A job without a session has no history."""
    if job.session_id is None or limit <= 0:
        return []
    return await _turns(
        pool,
        {
            "tenant": job.tenant,
            "session_id": job.session_id,
            "before_created_at": job.created_at,
            "before_id": job.id,
            "finished_only": True,
            "limit": limit,
        },
    )


async def clear_session(pool: Pool, *, tenant: str, session_id: str) -> int:
    """Mark every run of the session so far as cleared; answers how many. The
    runs and their events stay readable by job id (the audit log); the
    conversation, for the history routes and the agent, starts again empty."""
    async with pool.connection() as conn:
        cur = await conn.execute(queries.CLEAR_SESSION, {"tenant": tenant, "session_id": session_id})
        return cur.rowcount
