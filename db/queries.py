"""Every SQL statement Runstream runs, by name.

Parameters use psycopg's ``%(name)s`` style. Each job-state transition is one
guarded UPDATE: the WHERE clause names the states it may leave, so a transition
that lost a race changes nothing and returns no row.

Job statuses come from the enum (``runstream.db.status``), written into the
statements' text as literals rather than bound as parameters: the planner
matches a literal list, never a parameter, against a partial index's predicate
(``status IN (...)``).
"""

from collections.abc import Iterable

from runstream.db.status import IN_PROGRESS_STATUSES, TERMINAL_STATUSES, Status


def _in_order(statuses: Iterable[Status]) -> list[Status]:
    """In the enum's order: a statement's text is the same in every process."""
    chosen = set(statuses)
    return [status for status in Status if status in chosen]


def _status_list(statuses: Iterable[Status]) -> str:
    return ", ".join(f"'{status}'" for status in _in_order(statuses))


TERMINAL_SQL = _status_list(TERMINAL_STATUSES)
IN_PROGRESS_SQL = _status_list(IN_PROGRESS_STATUSES)

NOTIFY_CHANNEL = "runstream_events"
# Job status transitions (migration 0010's trigger): the payload is ``<seq>:<tenant>``.
TRANSITIONS_CHANNEL = "runstream_transitions"
# A NOTIFY payload must be shorter than 8000 bytes; the rows of a commit ride in
# it (APPEND_EVENTS, APPEND_JOB_EVENTS) only up to this many bytes and this many rows.
NOTIFY_ROWS_MAX_BYTES = 7800
NOTIFY_ROWS_MAX = 64

# New columns go last: some readers take a row by position.
JOB_COLUMNS = """
    id, tenant, session_id, message, model, status, attempt, last_seq,
    cancel_requested_at, error, metadata, created_at, started_at, finished_at,
    heartbeat_at, worker, queued_at, interrupted_at, webhook_url, user_id, agent, output,
    requirements, answers, paused_at, paused_s, attempt_base
"""

# ``queued_at``: NULL for a job that may run now; for one waiting behind its
# session's active run, its place in the line. ``created_at`` is the insert's
# own time, not the transaction's start: creations in one session take its lock
# first, so their created_at order is the order they got it in, which is the
# order they run in and the order history sees them in.
INSERT_JOB = f"""
INSERT INTO jobs (id, tenant, user_id, session_id, message, model, agent, metadata, webhook_url, created_at, queued_at)
VALUES (%(id)s, %(tenant)s, %(user_id)s, %(session_id)s, %(message)s, %(model)s, %(agent)s, %(metadata)s, %(webhook_url)s,
        clock_timestamp(),
        CASE WHEN %(queued)s THEN coalesce(%(queued_at)s::timestamptz, clock_timestamp()) END)
RETURNING {JOB_COLUMNS}
"""

# --- sessions: one active run each (migration 0008) ----------------------------

# Serializes job creation in one session with the end of its active run (the
# jobs_ended trigger takes the same lock), so a job is queued only behind a run
# that is still active when the creation commits.
LOCK_SESSION = """
SELECT pg_advisory_xact_lock(hashtextextended('runstream-session:' || %(tenant)s || ':' || %(session_id)s, 0))
"""

# The session's active run (a paused one too: it keeps its session), read after LOCK_SESSION in a statement of its own,
# so it sees every creation and every ending committed before the lock.
SESSION_ACTIVE_JOB = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE tenant = %(tenant)s AND session_id = %(session_id)s
  AND queued_at IS NULL AND status IN ({IN_PROGRESS_SQL})
"""

# A later job interrupts this run: marked, and with ``rollback`` left out of
# the conversation (as a cleared run is). A run that already ended is left as it ended.
MARK_INTERRUPTED = f"""
UPDATE jobs SET interrupted_at = now(),
    cleared_at = CASE WHEN %(rollback)s THEN coalesce(cleared_at, now()) ELSE cleared_at END
WHERE id = %(id)s AND status IN ({IN_PROGRESS_SQL})
"""

# What the end of these jobs set in motion, for the caller to send to the
# broker: their sessions' next runs (promoted by the jobs_ended trigger, not
# yet dispatched) and their webhook deliveries not yet done.
AFTER_JOBS_ENDED = f"""
SELECT 'run' AS kind, n.id::text AS ref
FROM jobs e JOIN jobs n ON n.tenant = e.tenant AND n.session_id = e.session_id
WHERE e.id = ANY(%(ids)s::uuid[]) AND n.status = '{Status.PENDING}' AND n.queued_at IS NULL AND n.attempt = 0
UNION ALL
SELECT 'webhook', d.webhook_id FROM webhook_deliveries d
WHERE d.job_id = ANY(%(ids)s::uuid[]) AND d.status = 'pending'
"""

# A run's structured answer (its ``output`` event), kept on the job; only by the
# attempt that runs it.
SET_JOB_OUTPUT = f"""
UPDATE jobs SET output = %(output)s
WHERE id = %(id)s AND attempt = %(attempt)s AND status = '{Status.RUNNING}'
"""

# Job creation under a tenant's limits. The advisory lock serializes one
# tenant's creations, so two requests cannot both take the last free place; the
# load is read in a statement of its own after the lock is granted, so its
# snapshot sees every job committed before.
LOCK_TENANT_JOBS = """
SELECT pg_advisory_xact_lock(hashtextextended('runstream-job-limits:' || %(tenant)s, 0))
"""

# ``window_ends_in_s``: when the oldest job of the rate window leaves it.
TENANT_JOB_LOAD = f"""
SELECT
    (SELECT count(*) FROM jobs
     WHERE tenant = %(tenant)s AND created_at > now() - make_interval(secs => %(window_s)s)) AS recent,
    (SELECT extract(epoch FROM min(created_at) + make_interval(secs => %(window_s)s) - now()) FROM jobs
     WHERE tenant = %(tenant)s AND created_at > now() - make_interval(secs => %(window_s)s)) AS window_ends_in_s,
    (SELECT count(*) FROM jobs
     WHERE tenant = %(tenant)s AND status IN ('{Status.PENDING}', '{Status.RUNNING}')) AS active
"""

GET_JOB = f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE id = %(id)s AND tenant = %(tenant)s
"""

# Newest first; the cursor is the (created_at, id) of the last row of the page.
LIST_JOBS = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE tenant = %(tenant)s
  AND (%(user_id)s::text IS NULL OR user_id = %(user_id)s)
  AND (%(session_id)s::text IS NULL OR session_id = %(session_id)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(agent)s::text IS NULL OR agent = %(agent)s)
  AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s)
  AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
  AND (%(cursor_created_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(cursor_created_at)s, %(cursor_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""

# The writer of job_events (with APPEND_JOB_EVENTS below, its form for one
# job): in ONE statement for any number of jobs (one batch per job), so a group
# commit of many jobs costs one statement, not one per job. Per job: bump last_seq under the job's row lock (which serializes
# every writer of the job, so seqs are gap-free and commit in order), optionally
# move the job to a new status, insert its rows, and notify once. Rows are
# locked in id order first, so two writers that share jobs cannot deadlock.
# The batches come as ONE JSON document (db.events.batches_json), parsed once:
# the client adapts one string, not an array per field.
# Guards, per job: the job must be in one of ``from_statuses``,
# and, when given, at ``attempt`` (fences a worker whose job was taken over) and
# at ``expected_last_seq`` (makes a retried append idempotent). A job whose
# guard refuses returns no row and writes nothing.
# The NOTIFY says ``<job_id>:<last_seq>``, followed by ``:<rows>`` when the rows
# this commit added to the job fit in it: a JSON array of
# ``[seq, type, payload text, created_at epoch]``, the payload text exactly as
# READ_EVENTS returns it. An API process then sends them to its live streams
# without reading them back; it reads the table whenever they are not there or
# do not follow on (db.events.parse_notification).
APPEND_EVENTS = f"""
WITH input AS MATERIALIZED (
    SELECT i.*, jsonb_array_length(i.payloads) AS n FROM jsonb_to_recordset(%(batches)s::jsonb) AS i(
        job_id uuid, payloads jsonb, from_statuses text[], attempt int,
        expected_last_seq bigint, new_status text, error text)
), locked AS (
    -- ``= ANY(ARRAY(...))``, here and in ``bumped``: an index lookup of the batch's
    -- jobs whatever the table's size. Written as joins, the plan (which expects
    -- 100 input rows) scanned all of ``jobs`` twice per commit: 9.5 ms of
    -- Postgres CPU per 10-job commit with 20,000 jobs in the table, 0.6 ms so.
    SELECT j.id FROM jobs j WHERE j.id = ANY(ARRAY(SELECT job_id FROM input)) ORDER BY j.id FOR UPDATE
), bumped AS (
    UPDATE jobs j SET
        last_seq = j.last_seq + i.n,
        status = coalesce(i.new_status, j.status),
        error = CASE WHEN i.new_status IS NULL THEN j.error ELSE i.error END,
        finished_at = CASE
            WHEN i.new_status IN ({TERMINAL_SQL}) THEN now()
            ELSE j.finished_at END,
        cancel_requested_at = CASE
            WHEN i.new_status = '{Status.CANCELLED}' THEN coalesce(j.cancel_requested_at, now())
            ELSE j.cancel_requested_at END,
        paused_at = CASE WHEN i.new_status = '{Status.PAUSED}' THEN now() ELSE j.paused_at END,
        paused_s = CASE
            WHEN j.status = '{Status.PAUSED}' AND i.new_status IS DISTINCT FROM '{Status.PAUSED}'
            THEN j.paused_s + extract(epoch FROM now() - j.paused_at)
            ELSE j.paused_s END
    FROM input i
    WHERE j.id = i.job_id
      AND j.id = ANY(ARRAY(SELECT id FROM locked))
      AND j.status = ANY(i.from_statuses)
      AND (i.attempt IS NULL OR j.attempt = i.attempt)
      AND (i.expected_last_seq IS NULL OR j.last_seq = i.expected_last_seq)
    RETURNING j.id, j.last_seq, j.attempt, j.status, j.cancel_requested_at, i.n, i.payloads
), inserted AS (
    INSERT INTO job_events (job_id, seq, attempt, type, payload)
    SELECT b.id, b.last_seq - b.n + e.ord, b.attempt, e.payload ->> 'type', e.payload
    FROM bumped b, jsonb_array_elements(b.payloads) WITH ORDINALITY AS e(payload, ord)
    RETURNING job_id, seq, type, payload, created_at
), notified AS MATERIALIZED (
    -- MATERIALIZED: computed once. Inlined, the planner (which expects one row
    -- of ``bumped``) joined it by a nested loop that rebuilt every job's rows for
    -- each job: O(jobs^2) json_build_array calls, most of Postgres's CPU at 200 jobs.
    SELECT job_id,
           json_agg(json_build_array(seq, type, payload::text, extract(epoch FROM created_at)) ORDER BY seq)::text AS rows
    FROM inserted
    WHERE job_id IN (SELECT id FROM bumped WHERE n <= {NOTIFY_ROWS_MAX})
    GROUP BY job_id
)
SELECT b.id, b.last_seq, b.status, b.cancel_requested_at,
       pg_notify('{NOTIFY_CHANNEL}', b.id::text || ':' || b.last_seq::text
                 || CASE WHEN octet_length(n.rows) <= {NOTIFY_ROWS_MAX_BYTES} THEN ':' || n.rows ELSE '' END)
FROM bumped b LEFT JOIN notified n ON n.job_id = b.id
"""

# APPEND_EVENTS for ONE job's batch, the common case (a worker streaming one
# run): the same guards, row lock, rows and NOTIFY, with the batch's fields as
# plain parameters (no JSON document to parse into records) and no separate
# FOR UPDATE (one row needs no lock order: its UPDATE takes the lock, and
# re-checks the guards on the newest row when it had to wait for it). ``n`` is
# the length of ``payloads``.
APPEND_JOB_EVENTS = f"""
WITH bumped AS (
    UPDATE jobs j SET
        last_seq = j.last_seq + %(n)s,
        status = coalesce(%(new_status)s, j.status),
        error = CASE WHEN %(new_status)s::text IS NULL THEN j.error ELSE %(error)s END,
        finished_at = CASE
            WHEN %(new_status)s IN ({TERMINAL_SQL}) THEN now()
            ELSE j.finished_at END,
        cancel_requested_at = CASE
            WHEN %(new_status)s = '{Status.CANCELLED}' THEN coalesce(j.cancel_requested_at, now())
            ELSE j.cancel_requested_at END,
        paused_at = CASE WHEN %(new_status)s = '{Status.PAUSED}' THEN now() ELSE j.paused_at END,
        paused_s = CASE
            WHEN j.status = '{Status.PAUSED}' AND %(new_status)s IS DISTINCT FROM '{Status.PAUSED}'
            THEN j.paused_s + extract(epoch FROM now() - j.paused_at)
            ELSE j.paused_s END
    WHERE j.id = %(job_id)s
      AND j.status = ANY(%(from_statuses)s::text[])
      AND (%(attempt)s::int IS NULL OR j.attempt = %(attempt)s)
      AND (%(expected_last_seq)s::bigint IS NULL OR j.last_seq = %(expected_last_seq)s)
    RETURNING j.id, j.last_seq, j.attempt, j.status, j.cancel_requested_at
), inserted AS (
    INSERT INTO job_events (job_id, seq, attempt, type, payload)
    SELECT b.id, b.last_seq - %(n)s + e.ord, b.attempt, e.payload ->> 'type', e.payload
    FROM bumped b, jsonb_array_elements(%(payloads)s::jsonb) WITH ORDINALITY AS e(payload, ord)
    RETURNING seq, type, payload, created_at
), notified AS (
    SELECT json_agg(json_build_array(seq, type, payload::text, extract(epoch FROM created_at)) ORDER BY seq)::text AS rows
    FROM inserted
    WHERE %(n)s <= {NOTIFY_ROWS_MAX}
)
SELECT b.id, b.last_seq, b.status, b.cancel_requested_at,
       pg_notify('{NOTIFY_CHANNEL}', b.id::text || ':' || b.last_seq::text
                 || CASE WHEN octet_length(n.rows) <= {NOTIFY_ROWS_MAX_BYTES} THEN ':' || n.rows ELSE '' END)
FROM bumped b, notified n
"""

# payload::text is the stored JSON as one line: streams send it as is;
# created_at lets the API measure delivery lag.
READ_EVENTS = """
SELECT seq, type, payload::text AS data, created_at
FROM job_events
WHERE job_id = %(job_id)s AND seq > %(after_seq)s
ORDER BY seq
LIMIT %(limit)s
"""

# READ_EVENTS for many jobs in one round trip (the API hub reads every job woken
# at once together): up to ``limit`` rows of each, each job from its own seq.
READ_EVENTS_OF_JOBS = """
SELECT r.job_id, e.seq, e.type, e.payload::text AS data, e.created_at
FROM unnest(%(job_ids)s::uuid[], %(after_seqs)s::bigint[]) AS r(job_id, after_seq)
CROSS JOIN LATERAL (
    SELECT seq, type, payload, created_at
    FROM job_events
    WHERE job_id = r.job_id AND seq > r.after_seq
    ORDER BY seq
    LIMIT %(limit)s
) AS e
ORDER BY r.job_id, e.seq
"""

# Claim a job for one attempt: a pending job, or a running one whose worker
# stopped heart-beating, unless its cancel was requested (the reaper ends that
# one: REAP_FINISH; a new attempt would only be stopped again). The previous
# status and error say why a new attempt starts (the reason in its ``retry``
# event). Never beyond ``max_attempts`` failed attempts, counted from
# ``attempt_base`` (the attempts used before the latest continuation of a
# paused run): a job that used them all is the reaper's to fail; the attempts
# handed back by a worker shutting down (``handbacks``, since that
# continuation) did not fail, so they do not use one up. Two deliveries of one
# job that claim at once serialize on the row lock, and the second one
# re-checks the WHERE against the row the first one wrote (running, fresh
# heartbeat), so it gets no row: one job never runs twice at once.
CLAIM_JOB = f"""
WITH prev AS (
    SELECT id, status AS prev_status, error AS prev_error
    FROM jobs
    WHERE id = %(id)s
      AND (%(max_attempts)s::int IS NULL OR attempt - attempt_base - handbacks < %(max_attempts)s)
      AND queued_at IS NULL
      AND (status = '{Status.PENDING}'
           OR (status = '{Status.RUNNING}'
               AND cancel_requested_at IS NULL
               AND heartbeat_at < now() - make_interval(secs => %(stale_after_s)s)))
    FOR UPDATE
)
UPDATE jobs j SET
    status = '{Status.RUNNING}',
    attempt = j.attempt + 1,
    started_at = coalesce(j.started_at, now()),
    heartbeat_at = now(),
    worker = %(worker)s,
    error = NULL
FROM prev
WHERE j.id = prev.id
RETURNING {", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))},
          j.handbacks, prev.prev_status, prev.prev_error
"""

# Heartbeat every job a worker runs in one statement; answers which of them
# have a cancel request, so one query per tick serves both.
HEARTBEAT = f"""
UPDATE jobs j SET heartbeat_at = now()
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS r(id, attempt)
WHERE j.id = r.id AND j.attempt = r.attempt AND j.status = '{Status.RUNNING}'
RETURNING j.id, j.cancel_requested_at
"""

CANCEL_REQUESTS = """
SELECT id FROM jobs
WHERE id = ANY(%(ids)s::uuid[]) AND cancel_requested_at IS NOT NULL
"""

# A running job is asked to stop; the worker appends the terminal event.
REQUEST_CANCEL = f"""
UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now())
WHERE id = %(id)s AND tenant = %(tenant)s AND status = '{Status.RUNNING}'
RETURNING status
"""

# Hand a job back for another attempt (a transient failure, or its worker
# shutting down: ``handback``, counted in ``handbacks``, not a failure): it is
# pending again, and the error says why, for the retry event. ``available_at``
# is when the retry is due (after its backoff), so the reaper does not take the
# wait for a lost message.
RELEASE_JOB = f"""
UPDATE jobs SET status = '{Status.PENDING}', error = %(error)s, worker = NULL,
    handbacks = handbacks + %(handback)s::int,
    available_at = now() + make_interval(secs => %(delay_s)s)
WHERE id = %(id)s AND status = '{Status.RUNNING}' AND attempt = %(attempt)s
RETURNING id
"""

# --- paused runs (human in the loop) ------------------------------------------

# A run that reached a tool needing a person keeps what it needs on the job row
# first: the paused Agno run and the requirements clients answer. Its writer
# then moves the job to paused with the ``input_required`` event (APPEND_EVENTS).
SAVE_PAUSED_RUN = f"""
UPDATE jobs SET paused_run = %(paused_run)s, requirements = %(requirements)s, answers = NULL
WHERE id = %(id)s AND status = '{Status.RUNNING}' AND attempt = %(attempt)s
RETURNING id
"""

PAUSED_RUN = """
SELECT paused_run FROM jobs WHERE id = %(id)s
"""

# The person's answers, in the transaction that moved the job from paused to
# pending (db.jobs.continue_job). The continuation's attempts count afresh
# (``attempt_base``, ``handbacks``); ``available_at`` now, so the reaper sees a fresh pending job.
ACCEPT_ANSWERS = f"""
UPDATE jobs SET answers = %(answers)s, requirements = NULL, attempt_base = attempt, handbacks = 0,
    available_at = now(), worker = NULL, error = NULL
WHERE id = %(id)s AND status = '{Status.PENDING}'
RETURNING id
"""

# Paused jobs nobody answered within ``pause_timeout_s``; locked until the
# caller's transaction appends their terminal events.
REAP_PAUSED = f"""
SELECT id FROM jobs
WHERE status = '{Status.PAUSED}' AND paused_at < now() - make_interval(secs => %(pause_timeout_s)s)
ORDER BY paused_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

# --- the reaper (tasks.reaper): the job row is the truth ----------------------

# Jobs no message will bring to a worker, that have attempts left: pending for
# ``pending_timeout_s`` past their ``available_at``, or running with a heartbeat
# older than ``stale_after_s`` and no cancel request (a dead run asked to cancel
# is REAP_FINISH's to end: the two sets must not meet, or a run whose heartbeat
# went stale between a tick's two statements would be run again). Each is
# marked as dispatched now (available_at), in the same statement that picks it,
# so every other worker's reaper leaves it alone for another threshold. SKIP
# LOCKED: a job that is being claimed or written right now is busy, not stuck.
# A queued job is not stuck: it waits for its session (the jobs_ended trigger
# promotes it when the run before it ends).
REAP_DISPATCH = f"""
WITH stuck AS (
    SELECT id FROM jobs
    WHERE status IN ('{Status.PENDING}', '{Status.RUNNING}')
      AND attempt - attempt_base - handbacks < %(max_attempts)s
      AND queued_at IS NULL
      AND ((status = '{Status.PENDING}'
            AND available_at < now() - make_interval(secs => %(pending_timeout_s)s))
        OR (status = '{Status.RUNNING}'
            AND cancel_requested_at IS NULL
            AND heartbeat_at < now() - make_interval(secs => %(stale_after_s)s)
            AND available_at < now() - make_interval(secs => %(stale_after_s)s)))
    ORDER BY available_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET available_at = now()
FROM stuck
WHERE j.id = stuck.id
RETURNING j.id, j.status
"""

# Jobs the reaper ends instead of dispatching: a dead run whose cancel was
# requested, or a job that used all its attempts (its last run died, or it was
# handed back on its last attempt after a transient failure; attempts handed
# back by a worker shutting down did not fail and do not count). Locked until the
# caller's transaction appends their terminal events.
REAP_FINISH = f"""
SELECT id, status, attempt, attempt - attempt_base AS run_attempts, error, cancel_requested_at FROM jobs
WHERE status IN ('{Status.PENDING}', '{Status.RUNNING}')
  AND ((status = '{Status.RUNNING}'
        AND heartbeat_at < now() - make_interval(secs => %(stale_after_s)s)
        AND (attempt - attempt_base - handbacks >= %(max_attempts)s OR cancel_requested_at IS NOT NULL))
    OR (status = '{Status.PENDING}' AND attempt - attempt_base - handbacks >= %(max_attempts)s AND available_at <= now()))
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

# What a batch of one (job, attempt) left in the log after ``after_seq``, at
# most ``n`` rows: a writer whose commit may or may not have happened (the
# connection dropped during it) compares them with what it sent.
ATTEMPT_EVENTS_AFTER = """
SELECT j.status, j.cancel_requested_at,
       coalesce((SELECT jsonb_agg(e.payload ORDER BY e.seq)
                 FROM job_events e
                 WHERE e.job_id = j.id AND e.attempt = %(attempt)s
                   AND e.seq > %(after_seq)s AND e.seq <= %(after_seq)s + %(n)s), '[]'::jsonb) AS payloads
FROM jobs j
WHERE j.id = %(job_id)s
"""

# --- conversations (runs of one session) -------------------------------------

# The newest runs of a session, newest first (the caller reverses them). Cleared
# runs are no longer part of the conversation. ``before_*`` bounds it to the runs
# submitted before a given one (the agent's context); ``finished_only`` leaves
# out runs still in progress. Its rows are conversation turns (db.conversation.Turn).
SESSION_RUNS = f"""
SELECT id AS job_id, status, message, error, created_at, interrupted_at IS NOT NULL AS interrupted FROM jobs
WHERE tenant = %(tenant)s AND session_id = %(session_id)s AND cleared_at IS NULL
  AND (%(before_created_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(before_created_at)s, %(before_id)s::uuid))
  AND (NOT %(finished_only)s OR status IN ({TERMINAL_SQL}))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""

RUN_EVENTS = """
SELECT job_id, seq, attempt, type, payload, created_at
FROM job_events
WHERE job_id = ANY(%(ids)s::uuid[])
ORDER BY job_id, seq
"""

CLEAR_SESSION = """
UPDATE jobs SET cleared_at = now()
WHERE tenant = %(tenant)s AND session_id = %(session_id)s AND cleared_at IS NULL
"""

# --- analytics (views from migration 0002) -----------------------------------

# The jobs an analytics question is about: a tenant, a created_at window, maybe
# a session, maybe an agent.
ANALYTICS_SCOPE = """
tenant = %(tenant)s
AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
AND (%(session_id)s::text IS NULL OR session_id = %(session_id)s)
AND (%(agent)s::text IS NULL OR agent = %(agent)s)
"""


def _outcome_counts(statuses: Iterable[Status]) -> str:
    """A column per status, named after it: how many of the rows' jobs are (or ended) in it."""
    return ", ".join(f"count(*) FILTER (WHERE outcome = '{status}') AS {status}" for status in _in_order(statuses))


# The scope's jobs in each status: the summary's counts, and each interval's.
OUTCOME_COUNTS = _outcome_counts(Status)

# Percentiles interpolate (percentile_cont): the p50 of 1, 2, 3, 4 is 2.5.
ANALYTICS_TIMINGS = f"""
SELECT count(*) AS jobs,
       {OUTCOME_COUNTS},
       count(*) FILTER (WHERE attempts > 1) AS retried,
       count(queue_wait_s) AS queue_wait_n,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY queue_wait_s) AS queue_wait_s,
       count(ttft_s) AS ttft_n,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY ttft_s) AS ttft_s,
       count(duration_s) AS duration_n,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY duration_s) AS duration_s,
       -- Time waiting for a person, over the jobs that paused.
       count(*) FILTER (WHERE paused_s > 0) AS paused_n,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY paused_s) FILTER (WHERE paused_s > 0) AS paused_s
FROM job_timings
WHERE {ANALYTICS_SCOPE}
"""

# Jobs of the scope per agent (NULL: jobs from before agents were recorded).
ANALYTICS_BY_AGENT = f"""
SELECT agent, count(*) AS jobs,
       {_outcome_counts(TERMINAL_STATUSES)},
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_s) AS duration_p50_s
FROM job_timings
WHERE {ANALYTICS_SCOPE}
GROUP BY agent
ORDER BY jobs DESC, agent NULLS LAST
"""

ANALYTICS_TOOLS = f"""
SELECT tool_name, count(*) AS calls, count(*) FILTER (WHERE is_error) AS errors
FROM tool_call_results
WHERE {ANALYTICS_SCOPE.replace("created_at", "job_created_at")}
GROUP BY tool_name
ORDER BY calls DESC, tool_name
LIMIT %(top)s
"""

JOB_METRICS = """
SELECT * FROM job_metrics WHERE job_id = %(id)s AND tenant = %(tenant)s
"""

# The timings of many jobs at once (a page of the job list): no event counts, so
# each job costs one index probe for its first text_delta.
JOBS_TIMINGS = """
SELECT job_id, session_id, agent, outcome, attempts, queue_wait_s, ttft_s, duration_s
FROM job_timings WHERE job_id = ANY(%(ids)s::uuid[]) AND tenant = %(tenant)s
"""

# An interval without jobs has no row of its own (per_bucket): its counts are zeros.
SERIES_OUTCOME_COUNTS = ", ".join(f"coalesce(p.{status}, 0) AS {status}" for status in Status)

# The scope's jobs per interval of ``created_at``, every interval of [since,
# until) present (empty ones as zeros): outcomes, retried jobs, and p50/p95 of
# time to first token and duration.
ANALYTICS_SERIES = f"""
WITH buckets AS (
    -- The last one may end after ``until`` (a partial interval).
    SELECT start FROM generate_series(%(since)s::timestamptz, %(until)s::timestamptz,
                                      make_interval(secs => %(interval_s)s)) AS start
    WHERE start < %(until)s::timestamptz
), per_bucket AS (
    SELECT date_bin(make_interval(secs => %(interval_s)s), created_at, %(since)s::timestamptz) AS start,
           count(*) AS jobs,
           {OUTCOME_COUNTS},
           count(*) FILTER (WHERE attempts > 1) AS retried,
           count(ttft_s) AS ttft_n,
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY ttft_s) AS ttft_s,
           count(duration_s) AS duration_n,
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY duration_s) AS duration_s
    FROM job_timings
    WHERE {ANALYTICS_SCOPE}
    GROUP BY 1
)
SELECT b.start, coalesce(p.jobs, 0) AS jobs, {SERIES_OUTCOME_COUNTS},
       coalesce(p.retried, 0) AS retried, coalesce(p.ttft_n, 0) AS ttft_n, p.ttft_s,
       coalesce(p.duration_n, 0) AS duration_n, p.duration_s
FROM buckets b LEFT JOIN per_bucket p ON p.start = b.start
ORDER BY b.start
"""

# For /metrics: bounded by retention, which keeps the jobs table to its window.
JOBS_BY_STATUS = """
SELECT status, count(*) AS n FROM jobs GROUP BY status
"""

# --- retention ---------------------------------------------------------------

# Retention has two parts (db/retention.py). Jobs whose events are in a month's
# partition go with the whole partition; the rest (their events in the default
# partition: ids of jobs created before partitioning) are deleted job by job, in
# batches. ``lows``/``highs`` are the attached partitions' bounds.
OUTSIDE_PARTITIONS = """
NOT EXISTS (SELECT 1 FROM unnest(%(lows)s::uuid[], %(highs)s::uuid[]) AS p(low, high)
            WHERE id >= p.low AND id < p.high)
"""

# Finished jobs older than the cutoff, and their events: seqs are gap-free from
# 0, so a job has exactly last_seq + 1 events and nothing needs counting.
PRUNE_CANDIDATES = f"""
SELECT count(*) AS jobs, coalesce(sum(last_seq + 1), 0)::bigint AS events
FROM jobs
WHERE finished_at < %(cutoff)s AND status IN ({TERMINAL_SQL})
  AND {OUTSIDE_PARTITIONS}
"""

PRUNE_NEXT_JOBS = f"""
SELECT id, last_seq FROM jobs
WHERE finished_at < %(cutoff)s AND status IN ({TERMINAL_SQL})
  AND {OUTSIDE_PARTITIONS}
ORDER BY finished_at, id
LIMIT %(limit)s
"""

# The jobs of one partition (an id range: the primary key's range scan), and
# how many of them must stay: unfinished, or finished after the cutoff. A
# partition is dropped only when none must.
PARTITION_JOBS = """
SELECT count(*) AS jobs, coalesce(sum(last_seq + 1), 0)::bigint AS events,
       count(*) FILTER (WHERE finished_at IS NULL OR finished_at >= %(cutoff)s) AS keeping
FROM jobs
WHERE id >= %(low)s AND id < %(high)s
"""

# The job rows of a dropped partition, a batch at a time (their events are gone
# with it; the foreign key's cascade finds nothing left to delete).
PRUNE_PARTITION_JOBS = """
DELETE FROM jobs
WHERE id IN (SELECT id FROM jobs WHERE id >= %(low)s AND id < %(high)s LIMIT %(limit)s)
"""

# A partition leaves in two steps. DETACH takes an exclusive lock on job_events
# for an instant (a catalog change; no row is read): waiting behind a long query
# would stall every stream queued behind it, so it gives up quickly instead and
# is retried. Then the detached table is dropped in a transaction of its own,
# freeing its files (which takes time in proportion to its size) without any
# lock on job_events.
PARTITION_DETACH_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '2s'"
DETACH_EVENT_PARTITION = "ALTER TABLE job_events DETACH PARTITION {partition}"
DROP_DETACHED_PARTITION = "DROP TABLE {partition}"

# Month tables detached but not dropped (a prune that stopped between its two steps).
DETACHED_EVENT_PARTITIONS = r"""
SELECT relname AS name FROM pg_class
WHERE relname LIKE 'job\_events\_y%' AND relkind = 'r' AND NOT relispartition
"""

# One bounded slice of events: a short transaction, row locks on rows nobody
# else writes (a finished job takes no more appends). By ctid: the rows found
# through the primary key are deleted where they lie (a TID scan), where a join
# back on (job_id, seq) would be planned as a scan of the whole table.
PRUNE_EVENTS = """
DELETE FROM job_events_default
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM job_events_default
    WHERE job_id = ANY(%(ids)s::uuid[])
    LIMIT %(limit)s
))
"""

PRUNE_JOBS = f"""
DELETE FROM jobs
WHERE id = ANY(%(ids)s::uuid[]) AND status IN ({TERMINAL_SQL})
"""

# --- the agent registry (db/agents.py) ---------------------------------------

# A worker records what each entry of its registry resolved to; the newest
# record of a name wins (a deploy that changes an agent rewrites it).
RECORD_AGENT = """
INSERT INTO agents (name, import_path, kind, description, recorded_at)
VALUES (%(name)s, %(import_path)s, %(kind)s, %(description)s, now())
ON CONFLICT (name) DO UPDATE SET
    import_path = excluded.import_path, kind = excluded.kind,
    description = excluded.description, recorded_at = excluded.recorded_at
"""

RECORDED_AGENTS = """
SELECT name, import_path, kind, description FROM agents WHERE name = ANY(%(names)s::text[])
"""

# --- event log partitions (db/partitions.py) -----------------------------------

# One partition maker at a time: every worker's reaper tries.
LOCK_EVENT_PARTITIONS = """
SELECT pg_advisory_xact_lock(hashtext('runstream.job_events_partitions'))
"""

EVENT_PARTITIONS = """
SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'job_events'::regclass
"""

# Templates for psycopg.sql (identifiers and bounds are composed, not bound:
# DDL takes no parameters).
CREATE_EVENT_PARTITION_TABLE = "CREATE TABLE {partition} (LIKE job_events INCLUDING DEFAULTS)"
MOVE_DEFAULT_EVENTS = """
WITH moved AS (
    DELETE FROM {default} WHERE job_id >= {low} AND job_id < {high} RETURNING *
)
INSERT INTO {partition} SELECT * FROM moved
"""
ATTACH_EVENT_PARTITION = "ALTER TABLE job_events ATTACH PARTITION {partition} FOR VALUES FROM ({low}) TO ({high})"

# --- job transitions (migration 0010: a trigger on jobs writes them) ---------

# A tenant's transitions after a seq, oldest first: the transitions stream.
READ_TRANSITIONS = """
SELECT seq, job_id, session_id, agent, status, previous_status, attempt, at
FROM job_transitions
WHERE tenant = %(tenant)s AND seq > %(after_seq)s
ORDER BY seq
LIMIT %(limit)s
"""

# The newest seq of any tenant: where a stream that asks for no earlier point starts.
LAST_TRANSITION_SEQ = """
SELECT last_seq FROM job_transition_counter
"""

PING = "SELECT 1"

# A LISTEN connection's (db/listener.py): the channel goes in as an identifier.
LISTEN = "LISTEN {}"

DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %(name)s"

# --- stream token secrets (db/secrets.py) ------------------------------------------

# The first process to start inserts one. In one transaction: the advisory lock
# first, then the insert, whose statement sees what a concurrent start committed
# while this one waited; so a fresh deployment gets exactly one key.
LOCK_STREAM_SECRETS = """
SELECT pg_advisory_xact_lock(hashtext('runstream.stream_secrets'))
"""

ENSURE_STREAM_SECRET = """
INSERT INTO stream_secrets (secret)
SELECT %(secret)s WHERE NOT EXISTS (SELECT 1 FROM stream_secrets)
"""

ADD_STREAM_SECRET = """
INSERT INTO stream_secrets (secret) VALUES (%(secret)s)
"""

# Newest first: the first signs, all of them verify.
STREAM_SECRETS = """
SELECT secret FROM stream_secrets ORDER BY id DESC LIMIT %(keep)s
"""

# After a rotation only the newest ``keep`` stay valid.
DROP_OLD_STREAM_SECRETS = """
DELETE FROM stream_secrets
WHERE id NOT IN (SELECT id FROM stream_secrets ORDER BY id DESC LIMIT %(keep)s)
"""

# --- webhook deliveries (runstream.tasks.webhooks; rows from migration 0008) --------

JOB_BY_ID = f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE id = %(id)s
"""

# Take a delivery for one attempt: not done, attempts left, and due (a retry's
# message may arrive a little before its time). The lease keeps the reaper's
# sweep, and any duplicate message, off it while the attempt runs, so one
# delivery never has two attempts at once.
CLAIM_WEBHOOK = """
UPDATE webhook_deliveries SET attempts = attempts + 1,
    next_attempt_at = now() + make_interval(secs => %(lease_s)s)
WHERE webhook_id = %(webhook_id)s AND status = 'pending' AND attempts < %(max_attempts)s
  AND next_attempt_at <= now() + interval '1 second'
RETURNING webhook_id, job_id, url, job_status, attempts, created_at
"""

# One attempt's record, and the delivery's state after it: ``status`` pending
# (tried again in ``retry_in_s``), delivered or failed.
RECORD_WEBHOOK_ATTEMPT = """
WITH recorded AS (
    INSERT INTO webhook_attempts (webhook_id, attempt, outcome, response_status, duration_ms, error)
    VALUES (%(webhook_id)s, %(attempt)s, %(outcome)s, %(response_status)s, %(duration_ms)s, %(error)s)
)
UPDATE webhook_deliveries SET status = %(status)s,
    next_attempt_at = now() + make_interval(secs => %(retry_in_s)s),
    finished_at = CASE WHEN %(status)s = 'pending' THEN NULL ELSE now() END
WHERE webhook_id = %(webhook_id)s
"""

# Deliveries whose message was lost (the worker died before sending it, or
# during an attempt): overdue by ``pending_timeout_s``. Each is marked as
# dispatched now, in the statement that picks it, so concurrent reapers take
# each once; one that used every attempt fails instead.
REAP_WEBHOOKS = """
WITH overdue AS (
    SELECT webhook_id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at < now() - make_interval(secs => %(pending_timeout_s)s)
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d SET next_attempt_at = now(),
    status = CASE WHEN d.attempts >= %(max_attempts)s THEN 'failed' ELSE 'pending' END,
    finished_at = CASE WHEN d.attempts >= %(max_attempts)s THEN now() END
FROM overdue
WHERE d.webhook_id = overdue.webhook_id
RETURNING d.webhook_id, d.status
"""

# A job's deliveries, oldest first, each with its attempts.
JOB_WEBHOOK_DELIVERIES = """
SELECT d.webhook_id, d.url, d.job_status, d.status, d.attempts, d.created_at, d.finished_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                     'attempt', a.attempt, 'outcome', a.outcome, 'response_status', a.response_status,
                     'duration_ms', a.duration_ms, 'error', a.error, 'at', a.created_at) ORDER BY a.id)
                 FROM webhook_attempts a WHERE a.webhook_id = d.webhook_id), '[]'::jsonb) AS attempt_log
FROM webhook_deliveries d
WHERE d.job_id = %(job_id)s
ORDER BY d.created_at, d.webhook_id
"""

# Every job and every event with its attempt, for an audit of the whole log
# (runstream soak checks each job's rows after breaking everything around them).
AUDIT_JOBS = """
SELECT id, status, attempt, error, last_seq, metadata FROM jobs ORDER BY created_at, id
"""

AUDIT_EVENTS = """
SELECT seq, attempt, type, payload::text AS data FROM job_events WHERE job_id = %(job_id)s ORDER BY seq
"""
