"""Paused runs (human in the loop): the ``paused`` status and what a pause keeps

Revision ID: 0009_paused_runs
Revises: 0008_job_transitions
Create Date: 2026-12-04

* ``jobs.status`` may be ``paused``: the run waits for a person (a tool that
  requires confirmation, user input or external execution). No worker holds it.
* ``jobs.paused_run``: the paused Agno run, serialized (``RunOutput.to_dict()``):
  its messages, tool calls and requirements. A continuation on any worker
  rebuilds the run from it; nothing of a pause lives only in a worker's memory.
* ``jobs.requirements``: the outstanding requirements as clients see them (the
  ``input_required`` event's list), which the API checks answers against.
* ``jobs.answers``: the accepted answers, kept until the continuation ends, so a
  continuation that is retried (its worker died) answers the same.
* ``jobs.paused_at`` (this pause began), ``jobs.paused_s`` (every pause so far,
  in seconds): the analytics count time paused apart from run time.
* ``jobs.attempt_base``: the attempts used before the latest continuation; a
  run's attempts are counted from it, so each continuation gets the full
  ``RUNSTREAM_MAX_ATTEMPTS``.
* ``job_timings`` (and ``job_metrics``, which reads it): ``paused_s`` joins,
  ``duration_s`` becomes run time (paused time left out).
* Sessions: a paused run keeps its session (it is the session's active run, a
  new job queues behind it), in the unique index and in the ``jobs_ended``
  trigger's check. Webhooks: the trigger fires when a run pauses (a delivery
  with status ``paused``) and when a paused job ends (cancel, pause timeout).
"""

import importlib
from types import ModuleType

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009_paused_runs"
down_revision = "0008_job_transitions"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)
STATUSES_BEFORE = "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')"
STATUSES = "status IN ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled')"

JOB_TIMINGS = """
CREATE VIEW job_timings AS
SELECT j.id AS job_id, j.tenant, j.session_id, j.model, j.agent,
       j.status AS outcome, j.attempt AS attempts,
       j.created_at, j.started_at, j.finished_at,
       extract(epoch FROM j.started_at - j.created_at)::float8 AS queue_wait_s,
       -- From submission, as the user waits: queue wait included. The first
       -- text_delta of any attempt (what the user saw first).
       extract(epoch FROM ft.created_at - j.created_at)::float8 AS ttft_s,
       -- From the first claim to the end, retries and their backoff included,
       -- time paused for a person left out (it is paused_s).
       (extract(epoch FROM j.finished_at - j.started_at) - j.paused_s)::float8 AS duration_s,
       -- Every pause, the one in progress up to now.
       (j.paused_s + CASE WHEN j.status = 'paused' THEN extract(epoch FROM now() - j.paused_at)
                          ELSE 0 END)::float8 AS paused_s
FROM jobs j
LEFT JOIN LATERAL (
    SELECT e.created_at FROM job_events e
    WHERE e.job_id = j.id AND e.type = 'text_delta'
    ORDER BY e.seq LIMIT 1
) ft ON true
"""


SESSIONS = importlib.import_module("runstream.migrations.versions.0005_session_policy_webhooks")
ACTIVE_BEFORE = "status IN ('pending', 'running')"
ACTIVE = "status IN ('pending', 'running', 'paused')"


def _job_ended_function(active: str) -> str:
    """0005_sessions' trigger function, its session's active run being ``active``."""
    sql = SESSIONS.JOB_ENDED.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
    assert sql.count(f"queued_at IS NULL AND {ACTIVE_BEFORE}") == 1, "0005_sessions' function changed: rewrite this"
    return sql.replace(f"queued_at IS NULL AND {ACTIVE_BEFORE}", f"queued_at IS NULL AND {active}")


def _session_rules(active: str, trigger_when: str) -> None:
    op.drop_index("jobs_one_active_run_per_session", "jobs")
    op.create_index(
        "jobs_one_active_run_per_session",
        "jobs",
        ["tenant", "session_id"],
        unique=True,
        postgresql_where=sa.text(f"session_id IS NOT NULL AND queued_at IS NULL AND {active}"),
    )
    op.execute(_job_ended_function(active))
    op.execute("DROP TRIGGER jobs_ended ON jobs")
    op.execute(
        f"""
        CREATE TRIGGER jobs_ended AFTER UPDATE OF status ON jobs
        FOR EACH ROW
        WHEN ({trigger_when})
        EXECUTE FUNCTION runstream_job_ended()
        """
    )


TRIGGER_WHEN_BEFORE = "OLD.status IN ('pending', 'running') AND NEW.status IN ('completed', 'failed', 'cancelled')"
# A run that pauses gets a webhook delivery (and keeps its session); a paused job
# that ends is an ending like any other.
TRIGGER_WHEN = (
    "(OLD.status IN ('pending', 'running', 'paused') AND NEW.status IN ('completed', 'failed', 'cancelled'))"
    " OR (OLD.status = 'running' AND NEW.status = 'paused')"
)


def _recreate_views(job_timings: str, previous: ModuleType) -> None:
    op.execute("DROP VIEW tool_call_results")
    op.execute("DROP VIEW job_metrics")
    op.execute("DROP VIEW job_timings")
    op.execute(job_timings)
    op.execute(previous.JOB_METRICS)
    op.execute(previous.TOOL_CALL_RESULTS)


def upgrade() -> None:
    previous = importlib.import_module("runstream.migrations.versions.0007_job_agent")
    op.drop_constraint("jobs_status_check", "jobs")
    op.create_check_constraint("jobs_status_check", "jobs", STATUSES)
    op.add_column("jobs", sa.Column("paused_run", JSONB))
    op.add_column("jobs", sa.Column("requirements", JSONB))
    op.add_column("jobs", sa.Column("answers", JSONB))
    op.add_column("jobs", sa.Column("paused_at", TS))
    op.add_column("jobs", sa.Column("paused_s", sa.Float, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("attempt_base", sa.Integer, nullable=False, server_default="0"))
    # The reaper's pause-timeout scan looks at paused jobs only.
    op.create_index("jobs_paused", "jobs", ["paused_at"], postgresql_where=sa.text("status = 'paused'"))
    _recreate_views(JOB_TIMINGS, previous)
    _session_rules(ACTIVE, TRIGGER_WHEN)


def downgrade() -> None:
    previous = importlib.import_module("runstream.migrations.versions.0007_job_agent")
    # A paused job cannot go back to a schema without the status: it ends cancelled.
    op.execute("UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE status = 'paused'")
    _session_rules(ACTIVE_BEFORE, TRIGGER_WHEN_BEFORE)
    _recreate_views(previous.JOB_TIMINGS, previous)
    op.drop_index("jobs_paused", "jobs")
    for column in ("attempt_base", "paused_s", "paused_at", "answers", "requirements", "paused_run"):
        op.drop_column("jobs", column)
    op.drop_constraint("jobs_status_check", "jobs")
    op.create_check_constraint("jobs_status_check", "jobs", STATUSES_BEFORE)
