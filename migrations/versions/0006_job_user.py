"""jobs.user_id: who, within the tenant, started the job

Revision ID: 0006_job_user
Revises: 0005_sessions
Create Date: 2026-12-04

An authenticator answers a principal, a tenant and a user id (a JWT's ``sub``,
or whatever a host application's own login says). The user id is kept on the
job, so the job's JSON shows it, the job list filters by it, and the worker
hands it to the agent. Null when the authenticator names no user (API keys,
the open mode) and for every job created before.

The list by user is the list by tenant narrowed, newest first: one index on
``(tenant, user_id, created_at DESC, id DESC)`` serves it with keyset paging.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_job_user"
down_revision = "0005_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("user_id", sa.Text, nullable=True))
    op.create_index(
        "jobs_tenant_user_created",
        "jobs",
        ["tenant", "user_id", sa.text("created_at DESC"), sa.text("id DESC")],
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("jobs_tenant_user_created", table_name="jobs")
    op.drop_column("jobs", "user_id")
