"""A job's status: the one list of them.

Whatever names a status takes it from here: the Python code, the SQL of
``db/queries.py`` (written into the statements' text from this enum), the API's
models (so the OpenAPI document's ``Status``), and the pages' JS
(``api/static/statuses.js``, written by ``python -m runstream.api.static_gen``).
The database's CHECK constraint on ``jobs.status`` is a migration's; a test holds
it to exactly these values. The transitions between them are ``db/jobs.py``'s.

Its own module, below ``db/jobs.py``: ``db/queries.py`` and ``db/events.py``,
which ``db/jobs.py`` imports, need it too.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """A job's status: pending (waiting for a worker), running, paused (waiting
    for a person's answers), or one it ends in: completed, failed, cancelled."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# The statuses a job ends in: nothing moves it out of them.
TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
# The others: a run still in progress (a paused one too), holding its session.
IN_PROGRESS_STATUSES = frozenset(Status) - TERMINAL_STATUSES
