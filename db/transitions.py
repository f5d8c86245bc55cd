"""The job transitions log (migration 0010): what the tenant-wide transitions stream reads.

Rows are written by a trigger on ``jobs``, never by this code; ``seq`` is
gap-free and commits in order across every tenant, so a reader that has every
row up to a seq misses nothing by asking for those after it.
"""

from __future__ import annotations

from typing import Any

from runstream.db import queries
from runstream.db.connector import Pool, one_row


async def read_transitions(pool: Pool, tenant: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(queries.READ_TRANSITIONS, {"tenant": tenant, "after_seq": after_seq, "limit": limit})
        return await cur.fetchall()


async def last_transition_seq(pool: Pool) -> int:
    """The newest committed seq (every one up to it has committed too)."""
    async with pool.connection() as conn:
        cur = await conn.execute(queries.LAST_TRANSITION_SEQ)
        return (await one_row(cur))["last_seq"]


def parse_notification(payload: str) -> tuple[int, str]:
    """``<seq>:<tenant>`` (the tenant may hold colons; the seq cannot)."""
    seq, _, tenant = payload.partition(":")
    return int(seq), tenant
