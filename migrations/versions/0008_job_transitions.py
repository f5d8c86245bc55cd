"""job_transitions: a log of every job status change, for the tenant-wide transitions stream

Revision ID: 0008_job_transitions
Revises: 0007_job_agent
Create Date: 2026-12-04

A trigger on ``jobs`` writes one row per transition (a job inserted, a new
status, a new attempt) and notifies ``runstream_transitions``, so every
statement that moves a job (claim, release, append with a new status, cancel,
the reaper, a session's interrupt, and any added later) is logged without each
having to remember.

``seq`` is gap-free and commits in order: each transition takes the one counter
row's lock until its transaction commits, as the job row lock does for a job's
events (a plain sequence would let a reader skip a row that commits late). The
trigger is deferred to commit, so the counter is the last lock a transaction
takes, after every job row and session lock of all its statements and their
triggers: it never waits inside a cycle of locks. Its cost is one serialized
commit per transaction that moves a job, as the NOTIFY each one sends costs
anyway; heartbeats and appends that change no status never reach it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_job_transitions"
down_revision = "0007_job_agent"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)

LOG_TRANSITION = """
CREATE FUNCTION runstream_log_job_transition() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next_seq bigint;
BEGIN
    UPDATE job_transition_counter SET last_seq = last_seq + 1 RETURNING last_seq INTO next_seq;
    INSERT INTO job_transitions (seq, tenant, job_id, session_id, agent, status, previous_status, attempt)
    VALUES (next_seq, NEW.tenant, NEW.id, NEW.session_id, NEW.agent, NEW.status,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.attempt);
    -- Which tenant's streams to wake, and up to where.
    PERFORM pg_notify('runstream_transitions', next_seq::text || ':' || NEW.tenant);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "job_transition_counter",
        sa.Column("id", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id", name="job_transition_counter_one_row"),
    )
    op.execute("INSERT INTO job_transition_counter (id, last_seq) VALUES (true, 0)")
    op.create_table(
        "job_transitions",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("job_id", sa.Uuid, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("session_id", sa.Text),
        sa.Column("agent", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        # NULL: the job was created.
        sa.Column("previous_status", sa.Text),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", TS, nullable=False, server_default=sa.text("clock_timestamp()")),
    )
    # A tenant's stream reads its transitions after a seq; retention deletes by job.
    op.create_index("job_transitions_tenant_seq", "job_transitions", ["tenant", "seq"])
    op.create_index("job_transitions_job", "job_transitions", ["job_id"])
    op.execute(LOG_TRANSITION)
    op.execute(
        "CREATE CONSTRAINT TRIGGER jobs_log_created AFTER INSERT ON jobs "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION runstream_log_job_transition()"
    )
    # Heartbeats and appends without a new status name neither column, or leave
    # both as they were: the WHEN keeps them off the counter.
    op.execute(
        "CREATE CONSTRAINT TRIGGER jobs_log_transition AFTER UPDATE OF status, attempt ON jobs "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
        "WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.attempt IS DISTINCT FROM NEW.attempt) "
        "EXECUTE FUNCTION runstream_log_job_transition()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_log_transition ON jobs")
    op.execute("DROP TRIGGER jobs_log_created ON jobs")
    op.execute("DROP FUNCTION runstream_log_job_transition()")
    op.drop_table("job_transitions")
    op.drop_table("job_transition_counter")
