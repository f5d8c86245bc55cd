"""jobs.handbacks: attempts handed back by a worker shutting down

Revision ID: 0010_handbacks
Revises: 0009_paused_runs
Create Date: 2026-12-04

A run handed back on shutdown did not fail, so it does not count against
``max_attempts``: the claim and the reaper count ``attempt - handbacks``.
Before, only the latest hand-back was known (the job's error), so a job handed
back, then failing, lost the free attempt. A job pending after a hand-back when
the migration runs (a deploy makes such jobs) keeps that one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_handbacks"
down_revision = "0009_paused_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("handbacks", sa.Integer, nullable=False, server_default=sa.text("0")))
    op.execute("UPDATE jobs SET handbacks = 1 WHERE status = 'pending' AND error = 'worker shut down'")


def downgrade() -> None:
    op.drop_column("jobs", "handbacks")
