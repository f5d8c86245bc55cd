"""conversation clearing, analytics views, indexes for analytics and retention

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Views (docs/analytics.md shows their plans on 10M events):

* ``job_timings`` — one row per job: queue wait, time to first token, duration,
  attempts, outcome. Reads the jobs row and, per job, the first ``text_delta``
  through the primary key (a few index entries), never the whole log.
* ``job_metrics`` — ``job_timings`` plus event counts by type and text
  characters: reads every event of the jobs it is asked about, so ask it about a
  few jobs (a job, a session), not a month.
* ``tool_call_results`` — one row per tool call with its result, if any, and
  whether it counts as an error (see the view).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)

JOB_TIMINGS = """
CREATE VIEW job_timings AS
SELECT j.id AS job_id, j.tenant, j.session_id, j.model,
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

# A tool call is an error when its result says so (Runstream's tools, like most,
# answer a failure as text starting with "error"), or when it never got a result
# although its job has finished (the run died, timed out or was cancelled inside
# the tool). Calls pair with results by (job, attempt, call_id): call ids restart
# with each attempt.
TOOL_CALL_RESULTS = """
CREATE VIEW tool_call_results AS
SELECT c.job_id, j.tenant, j.session_id, j.created_at AS job_created_at,
       c.attempt, c.seq, c.payload ->> 'tool_name' AS tool_name,
       c.payload ->> 'call_id' AS call_id, c.created_at AS called_at,
       r.created_at AS answered_at, r.payload ->> 'output' AS output,
       (CASE WHEN r.seq IS NULL THEN j.status IN ('completed', 'failed', 'cancelled')
             ELSE starts_with(lower(ltrim(r.payload ->> 'output')), 'error') END) AS is_error
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


def upgrade() -> None:
    # Clearing a conversation hides its runs from the session's history and from
    # the agent's context; their events stay in the log (the audit trail) until
    # retention deletes them.
    op.add_column("jobs", sa.Column("cleared_at", TS))
    # Retention finds finished jobs by age; analytics' time windows use created_at
    # (jobs_tenant_created, from 0001).
    op.create_index("jobs_finished_at", "jobs", ["finished_at"], postgresql_where=sa.text("finished_at IS NOT NULL"))
    # Tool events are a small fraction of the log: a partial index lets the tool
    # statistics read only them, however many text deltas surround them.
    op.create_index(
        "job_events_tools",
        "job_events",
        ["job_id", "attempt", "seq"],
        postgresql_where=sa.text("type IN ('tool_call', 'tool_result')"),
    )
    op.execute(JOB_TIMINGS)
    op.execute(JOB_METRICS)
    op.execute(TOOL_CALL_RESULTS)


def downgrade() -> None:
    op.execute("DROP VIEW tool_call_results")
    op.execute("DROP VIEW job_metrics")
    op.execute("DROP VIEW job_timings")
    op.drop_index("job_events_tools", "job_events")
    op.drop_index("jobs_finished_at", "jobs")
    op.drop_column("jobs", "cleared_at")
