"""The keys that sign stream tokens, kept in Postgres so every API process shares them.

``RUNSTREAM_SECRET``, when set, overrides the table (api/security.py).
"""

from __future__ import annotations

import secrets

from runstream.db import queries
from runstream.db.connector import Pool

SECRET_BYTES = 32
# How many keys verify: the newest signs; the one before it still verifies
# tokens issued before a rotation, until the next rotation drops it.
KEEP = 2


async def stream_secrets(pool: Pool) -> list[bytes]:
    """The shared keys, newest first; the first start of a deployment makes one."""
    async with pool.connection() as conn:
        async with conn.transaction():
            await conn.execute(queries.LOCK_STREAM_SECRETS)
            await conn.execute(queries.ENSURE_STREAM_SECRET, {"secret": secrets.token_bytes(SECRET_BYTES)})
        rows = await (await conn.execute(queries.STREAM_SECRETS, {"keep": KEEP})).fetchall()
    return [bytes(row["secret"]) for row in rows]


async def rotate_stream_secret(pool: Pool) -> None:
    """Add a new key and keep only the newest ``KEEP``. API processes read the
    keys when they start: restart them (a rolling deploy) to sign with the new one."""
    async with pool.connection() as conn:
        async with conn.transaction():
            await conn.execute(queries.LOCK_STREAM_SECRETS)
            await conn.execute(queries.ADD_STREAM_SECRET, {"secret": secrets.token_bytes(SECRET_BYTES)})
            await conn.execute(queries.DROP_OLD_STREAM_SECRETS, {"keep": KEEP})
