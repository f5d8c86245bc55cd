"""What the data floor raises, so the floors above never catch a driver's errors.

Only one failure is theirs to handle: the database cannot be used right now (it
is down, restarting, refusing connections, or every pooled connection is busy
for longer than the wait allows). What a retry can fix is ``DatabaseUnavailable``;
anything else from the driver is a defect and travels as it is.
"""

from __future__ import annotations

import psycopg

# SQLSTATE classes that say the server, not the statement, is the problem:
# 08 connection exception, 53 insufficient resources (too many connections),
# 57 operator intervention (shutdown, cannot connect now, statement cancelled).
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})


class DatabaseUnavailable(Exception):
    """The database could not serve the call; nothing it was asked to do is
    known to have happened unless the caller checks (a commit may have landed
    before a connection was lost)."""


def is_unavailable(exc: psycopg.Error) -> bool:
    """Whether a driver error means the database is unavailable, not that the
    statement is wrong: no SQLSTATE (the connection broke, a pool checkout timed
    out) or one of the classes above."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    return exc.sqlstate is None or exc.sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
