"""jobs.available_at: when a job's next attempt may start (crash recovery)

Revision ID: 0003_recovery
Revises: 0002
Create Date: 2026-11-24

A job released for a retry after a transient failure waits out its backoff as
``pending``; ``available_at`` is when that backoff ends, so the reaper does not
mistake it for a job whose message the broker lost and dispatch it early. The
reaper also moves it to ``now()`` when it re-dispatches a job, so several
workers' reapers dispatch each stuck job once per threshold, not once each.

No index: the reaper reads unfinished jobs only, through ``jobs_unfinished``
(0001), which stays as small as the set of pending and running jobs.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_recovery"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("available_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=sa.text("now()")),
    )


def downgrade() -> None:
    op.drop_column("jobs", "available_at")
