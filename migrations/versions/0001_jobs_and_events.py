"""jobs and job_events

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant", sa.Text, nullable=False, server_default="default"),
        sa.Column("session_id", sa.Text),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="-1"),
        sa.Column("cancel_requested_at", TS),
        sa.Column("error", sa.Text),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("heartbeat_at", TS),
        sa.Column("worker", sa.Text),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')",
            name="jobs_status_check",
        ),
    )
    # Listing: newest first per tenant, optionally within a session (keyset paging).
    op.create_index("jobs_tenant_created", "jobs", ["tenant", sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index(
        "jobs_tenant_session_created",
        "jobs",
        ["tenant", "session_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    # The reaper looks only at unfinished jobs: keep that index small.
    op.create_index(
        "jobs_unfinished",
        "jobs",
        ["status", "heartbeat_at"],
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )

    op.create_table(
        "job_events",
        sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("clock_timestamp()")),
        sa.PrimaryKeyConstraint("job_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("job_events")
    op.drop_table("jobs")
