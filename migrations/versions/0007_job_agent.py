"""jobs.agent and jobs.output, the agents table, analytics views by agent

Revision ID: 0007_job_agent
Revises: 0006_job_user
Create Date: 2026-12-04

* ``jobs.agent``: the registry entry (RUNSTREAM_AGENTS) a job runs; NULL for
  jobs from before, which ran the built-in assistant.
* ``jobs.output``: a run's structured answer (an agent's ``output_schema``).
* ``agents``: what each entry of a worker's registry resolved to (kind,
  description), recorded by the worker at start-up, so the API can list agents
  without importing agent code.
* The analytics views gain an ``agent`` column; ``tool_call_results`` also
  counts a result marked ``is_error`` (a tool that raised) as an error.
"""

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0007_job_agent"
down_revision = "0006_job_user"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)

JOB_TIMINGS = """
CREATE VIEW job_timings AS
SELECT j.id AS job_id, j.tenant, j.session_id, j.model, j.agent,
       j.status AS outcome, j.attempt AS attempts,
       j.created_at, j.started_at, j.finished_at,
       extract(epoch FROM j.started_at - j.created_at)::float8 AS queue_wait_s,
       -- From submission, as the user waits: queue wait included. The first
       -- text_delta of any attempt (what the user saw first).
       extract(epoch FROM ft.created_at - j.created_at)::float8 AS ttft_s,
       -- From the first claim to the end, retries and their backoff included.
       extract(epoch FROM j.finished_at - j.started_at)::float8 AS duration_s
FROM jobs j
LEFT JOIN LATERAL (
    SELECT e.created_at FROM job_events e
    WHERE e.job_id = j.id AND e.type = 'text_delta'
    ORDER BY e.seq LIMIT 1
) ft ON true
"""

# As in 0002; recreated because it reads job_timings (t.* now holds agent).
JOB_METRICS = """
CREATE VIEW job_metrics AS
SELECT t.*, c.events, c.events_by_type, c.text_chars,
       coalesce((c.events_by_type ->> 'tool_call')::bigint, 0) AS tool_calls,
       coalesce((c.events_by_type ->> 'retry')::bigint, 0) AS retries
FROM job_timings t
CROSS JOIN LATERAL (
    SELECT coalesce(sum(n), 0)::bigint AS events,
           coalesce(jsonb_object_agg(type, n), '{}'::jsonb) AS events_by_type,
           coalesce(sum(chars), 0)::bigint AS text_chars
    FROM (
        SELECT e.type, count(*) AS n, sum(length(e.payload ->> 'delta')) AS chars
        FROM job_events e WHERE e.job_id = t.job_id GROUP BY e.type
    ) per_type
) c
"""

# A tool call is an error when its result is marked so (the tool raised), when
# the result text says so (tools that answer a failure as text starting with
# "error"), or when it never got a result although its job has finished.
TOOL_CALL_RESULTS = """
CREATE VIEW tool_call_results AS
SELECT c.job_id, j.tenant, j.session_id, j.agent, j.created_at AS job_created_at,
       c.attempt, c.seq, c.payload ->> 'tool_name' AS tool_name,
       c.payload ->> 'call_id' AS call_id, c.created_at AS called_at,
       r.created_at AS answered_at, r.payload ->> 'output' AS output,
       (CASE WHEN r.seq IS NULL THEN j.status IN ('completed', 'failed', 'cancelled')
             ELSE coalesce((r.payload ->> 'is_error')::boolean, false)
                  OR starts_with(lower(ltrim(r.payload ->> 'output')), 'error') END) AS is_error
FROM job_events c
JOIN jobs j ON j.id = c.job_id
LEFT JOIN LATERAL (
    SELECT e.seq, e.created_at, e.payload FROM job_events e
    WHERE e.job_id = c.job_id AND e.type = 'tool_result' AND e.attempt = c.attempt
      AND e.seq > c.seq AND e.payload ->> 'call_id' IS NOT DISTINCT FROM c.payload ->> 'call_id'
    ORDER BY e.seq LIMIT 1
) r ON true
WHERE c.type = 'tool_call'
"""


def _drop_views() -> None:
    op.execute("DROP VIEW tool_call_results")
    op.execute("DROP VIEW job_metrics")
    op.execute("DROP VIEW job_timings")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("agent", sa.Text))
    op.add_column("jobs", sa.Column("output", sa.dialects.postgresql.JSONB))
    # The job list filters by agent within a tenant, newest first.
    op.create_index("jobs_tenant_agent_created", "jobs", ["tenant", "agent", "created_at"])
    op.create_table(
        "agents",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("import_path", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("recorded_at", TS, nullable=False, server_default=sa.text("now()")),
    )
    _drop_views()
    op.execute(JOB_TIMINGS)
    op.execute(JOB_METRICS)
    op.execute(TOOL_CALL_RESULTS)


def downgrade() -> None:
    before = importlib.import_module("runstream.migrations.versions.0002_history_analytics_retention")
    _drop_views()
    op.execute(before.JOB_TIMINGS)
    op.execute(before.JOB_METRICS)
    op.execute(before.TOOL_CALL_RESULTS)
    op.drop_table("agents")
    op.drop_index("jobs_tenant_agent_created", "jobs")
    op.drop_column("jobs", "output")
    op.drop_column("jobs", "agent")
