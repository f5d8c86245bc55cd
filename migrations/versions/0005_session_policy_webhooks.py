"""one active run per session (a queue behind it), and webhook deliveries

Revision ID: 0005_sessions
Revises: 0004_stream_secrets
Create Date: 2026-12-04

Sessions. A job of a session is *active* while it is pending or running and
not queued. ``jobs_one_active_run_per_session`` makes Postgres refuse a second
active job in one session, whatever the timing; a job created while the session
is busy waits with ``queued_at`` set (its place in the line), is never
dispatched, and is promoted (``queued_at`` cleared) by the trigger below in the
very transaction that ends the session's active run, whichever path ends it (a
worker, a cancel, the reaper). So a queue never waits behind a run that has
ended. The trigger and job creation take the same per-session advisory lock, so
a job queued by a creation that commits while the active run is ending is seen
by the promotion.

``interrupted_at``: a later job of the session cancelled this run (if_busy
interrupt or rollback).

Webhooks. ``jobs.webhook_url`` is where the job's state changes are POSTed. The
same trigger writes one ``webhook_deliveries`` row per terminal state, in the
transaction that reaches it, so no ending is lost between the commit and the
send; each try is a ``webhook_attempts`` row. A ``paused`` status, when it
joins, fires a delivery too: add it to the trigger's WHEN (a delivery only; a
paused run keeps its session).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_sessions"
down_revision = "0004_stream_secrets"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)

SESSION_LOCK = "pg_advisory_xact_lock(hashtextextended('runstream-session:' || NEW.tenant || ':' || NEW.session_id, 0))"

JOB_ENDED = f"""
CREATE FUNCTION runstream_job_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head uuid;
BEGIN
    IF NEW.webhook_url IS NOT NULL THEN
        -- The id is stable for this state (its event's seq): every attempt and
        -- every re-dispatch sends the same webhook-id.
        INSERT INTO webhook_deliveries (webhook_id, job_id, url, job_status)
        VALUES ('msg_' || replace(NEW.id::text, '-', '') || '_' || NEW.last_seq, NEW.id, NEW.webhook_url, NEW.status)
        ON CONFLICT DO NOTHING;
    END IF;
    IF NEW.session_id IS NOT NULL AND NEW.queued_at IS NULL AND NEW.status IN ('completed', 'failed', 'cancelled') THEN
        PERFORM {SESSION_LOCK};
        -- Each statement sees what committed before it, under the lock. A head
        -- cancelled meanwhile fails the UPDATE's re-check: take the next one.
        LOOP
            EXIT WHEN EXISTS (
                SELECT 1 FROM jobs
                WHERE tenant = NEW.tenant AND session_id = NEW.session_id
                  AND queued_at IS NULL AND status IN ('pending', 'running'));
            SELECT id INTO head FROM jobs
            WHERE tenant = NEW.tenant AND session_id = NEW.session_id
              AND queued_at IS NOT NULL AND status = 'pending'
            ORDER BY queued_at, created_at, id
            LIMIT 1;
            EXIT WHEN head IS NULL;
            UPDATE jobs SET queued_at = NULL, available_at = now()
            WHERE id = head AND queued_at IS NOT NULL AND status = 'pending';
            EXIT WHEN FOUND;
        END LOOP;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column("jobs", sa.Column("queued_at", TS))
    op.add_column("jobs", sa.Column("interrupted_at", TS))
    op.add_column("jobs", sa.Column("webhook_url", sa.Text))
    # Sessions that already hold several unfinished jobs: the oldest (a running
    # one first) stays active, the pending others queue behind it in order.
    op.execute(
        """
        UPDATE jobs j SET queued_at = j.created_at
        WHERE j.session_id IS NOT NULL AND j.status = 'pending'
          AND EXISTS (
            SELECT 1 FROM jobs o
            WHERE o.tenant = j.tenant AND o.session_id = j.session_id AND o.id <> j.id
              AND (o.status = 'running' OR (o.status = 'pending' AND (o.created_at, o.id) < (j.created_at, j.id))))
        """
    )
    op.create_index(
        "jobs_one_active_run_per_session",
        "jobs",
        ["tenant", "session_id"],
        unique=True,
        postgresql_where=sa.text("session_id IS NOT NULL AND queued_at IS NULL AND status IN ('pending', 'running')"),
    )
    op.create_index(
        "jobs_session_queue",
        "jobs",
        ["tenant", "session_id", "queued_at"],
        postgresql_where=sa.text("queued_at IS NOT NULL AND status = 'pending'"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("webhook_id", sa.Text, primary_key=True),
        sa.Column("job_id", sa.Uuid, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("job_status", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("finished_at", TS),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="webhook_deliveries_status"),
    )
    op.create_index("webhook_deliveries_job", "webhook_deliveries", ["job_id"])
    op.create_index(
        "webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "webhook_id", sa.Text, sa.ForeignKey("webhook_deliveries.webhook_id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("response_status", sa.Integer),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("outcome IN ('delivered', 'failed', 'refused')", name="webhook_attempts_outcome"),
    )
    op.create_index("webhook_attempts_delivery", "webhook_attempts", ["webhook_id", "attempt"])
    op.execute(JOB_ENDED)
    op.execute(
        """
        CREATE TRIGGER jobs_ended AFTER UPDATE OF status ON jobs
        FOR EACH ROW
        WHEN (OLD.status IN ('pending', 'running') AND NEW.status IN ('completed', 'failed', 'cancelled'))
        EXECUTE FUNCTION runstream_job_ended()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_ended ON jobs")
    op.execute("DROP FUNCTION runstream_job_ended()")
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_index("jobs_session_queue", "jobs")
    op.drop_index("jobs_one_active_run_per_session", "jobs")
    op.drop_column("jobs", "webhook_url")
    op.drop_column("jobs", "interrupted_at")
    op.drop_column("jobs", "queued_at")
