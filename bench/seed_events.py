"""Seed a throwaway database with a large event log and record the plans of the
analytics, history and retention queries on it (docs/analytics.md).

    python -m runstream.bench.seed_events --events 10000000 --plans docs/analytics-plans.md

It creates a new database next to ``--admin-url``'s, migrates it, fills it with
``INSERT ... SELECT generate_series`` (constraints and indexes are dropped for the
load and rebuilt after it, exactly as the migrations defined them: building an
index once is far cheaper than maintaining it over 10M inserts), runs ANALYZE,
then EXPLAIN (ANALYZE, BUFFERS) on each query as db/queries.py has it, and drops
the database unless ``--keep``.

The shape: jobs of ``--events-per-job`` events over the last 30 days, in sessions
of 10; 90% completed, 5% failed, 3% cancelled, 1% running, 1% pending; 5% retried;
every 5th job calls a tool (1 in 10 of those answers with an error).
"""

from __future__ import annotations

import argparse
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from sqlalchemy.engine import make_url

from runstream.db import queries
from runstream.db.migrate import upgrade_to_head
from runstream.db.partitions import partitions_of_rows

SEED_JOBS = """
INSERT INTO jobs (id, tenant, session_id, message, model, status, attempt, last_seq,
                  created_at, started_at, finished_at)
SELECT md5('job' || i)::uuid, 'default', 'session-' || (i / 10), 'question ' || i, 'offline',
       CASE WHEN i %% 100 < 90 THEN 'completed' WHEN i %% 100 < 95 THEN 'failed'
            WHEN i %% 100 < 98 THEN 'cancelled' WHEN i %% 100 = 98 THEN 'running' ELSE 'pending' END,
       CASE WHEN i %% 100 = 99 THEN 0 WHEN i %% 20 = 7 THEN 2 ELSE 1 END,
       CASE WHEN i %% 100 = 99 THEN -1 ELSE %(per_job)s - 1 END,
       c,
       CASE WHEN i %% 100 = 99 THEN NULL ELSE c + (i %% 7) * interval '100 ms' END,
       CASE WHEN i %% 100 >= 98 THEN NULL ELSE c + interval '8 s' END
FROM generate_series(0, %(jobs)s - 1) AS i,
     LATERAL (SELECT %(now)s::timestamptz - interval '30 days' * (i::float8 / %(jobs)s) AS c) t
"""

# seq 0 reasoning, then text deltas; the last event is terminal; every 5th job
# has a tool call and result just before it.
SEED_EVENTS = """
INSERT INTO job_events (job_id, seq, attempt, type, payload, created_at)
SELECT j.id, s, 1, t.type, k.payload, j.started_at + s * interval '50 ms'
FROM jobs j
CROSS JOIN generate_series(0, %(per_job)s - 1) AS s
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN s = 0 THEN 'reasoning'
        WHEN s = %(per_job)s - 1 AND j.status <> 'running'
            THEN CASE WHEN j.status = 'failed' THEN 'error' ELSE 'done' END
        WHEN s = %(per_job)s - 3 AND j.id::text < '33' THEN 'tool_call'
        WHEN s = %(per_job)s - 2 AND j.id::text < '33' THEN 'tool_result'
        ELSE 'text_delta' END AS type
) t
CROSS JOIN LATERAL (
    SELECT CASE t.type
        WHEN 'reasoning' THEN jsonb_build_object('type', 'reasoning', 'text', 'thinking about it')
        WHEN 'text_delta' THEN jsonb_build_object('type', 'text_delta', 'delta', 'word' || s || ' ')
        WHEN 'tool_call' THEN jsonb_build_object('type', 'tool_call', 'tool_name',
            CASE WHEN j.id::text < '1' THEN 'current_utc_time' ELSE 'calculate' END,
            'argument', '{"expression": "2+3"}', 'call_id', 'call_1')
        WHEN 'tool_result' THEN jsonb_build_object('type', 'tool_result', 'call_id', 'call_1',
            'output', CASE WHEN j.id::text < '05' THEN 'error: division by zero' ELSE '5' END)
        WHEN 'error' THEN jsonb_build_object('type', 'error', 'message', 'model failed')
        ELSE jsonb_build_object('type', 'done', 'status', j.status) END AS payload
) k
WHERE j.status <> 'pending'
"""

TABLE_DEFINITIONS = """
SELECT 'constraint' AS kind, conname AS name, pg_get_constraintdef(oid) AS definition
FROM pg_constraint WHERE conrelid = 'job_events'::regclass
UNION ALL
SELECT 'index', indexname, indexdef FROM pg_indexes
WHERE tablename = 'job_events'
  AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'job_events'::regclass)
"""

UUID_ARRAY = re.compile(r"'\{[0-9a-f,-]{100,}\}'")

SIZES = """
SELECT c.relname AS name, pg_size_pretty(pg_relation_size(c.oid)) AS size
FROM pg_class c
WHERE c.relname IN ('jobs', 'job_events') OR c.oid IN (
    SELECT indexrelid FROM pg_index WHERE indrelid IN ('jobs'::regclass, 'job_events'::regclass))
ORDER BY pg_relation_size(c.oid) DESC
"""


def seconds_since(start: float) -> str:
    return f"{time.perf_counter() - start:.1f} s"


def load(conn: psycopg.Connection[DictRow], events: int, per_job: int, now: datetime, log: list[str]) -> None:
    jobs = events // per_job
    conn.execute("SET maintenance_work_mem = '512MB'")
    conn.execute("SET synchronous_commit = off")
    definitions = conn.execute(TABLE_DEFINITIONS).fetchall()
    for row in definitions:
        if row["kind"] == "constraint":
            conn.execute(sql.SQL("ALTER TABLE job_events DROP CONSTRAINT {}").format(sql.Identifier(row["name"])))
        else:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(row["name"])))

    start = time.perf_counter()
    conn.execute(SEED_JOBS, {"jobs": jobs, "per_job": per_job, "now": now})
    log.append(f"- {jobs:,} jobs inserted in {seconds_since(start)}")
    start = time.perf_counter()
    inserted = conn.execute(SEED_EVENTS, {"per_job": per_job}).rowcount
    log.append(f"- {inserted:,} events inserted in {seconds_since(start)} (no index, no constraint)")
    # Retried jobs: their events are attempt 2's, after a retry event at seq 1.
    conn.execute(
        "UPDATE job_events e SET attempt = 2, type = 'retry',"
        ' payload = \'{"type": "retry", "attempt": 2, "reason": "model timeout"}\''
        " FROM jobs j WHERE j.id = e.job_id AND j.attempt = 2 AND e.seq = 1"
    )
    for row in definitions:
        start = time.perf_counter()
        if row["kind"] == "constraint":
            conn.execute(
                sql.SQL("ALTER TABLE job_events ADD CONSTRAINT {} {}").format(
                    sql.Identifier(row["name"]), sql.SQL(row["definition"])
                )
            )
        else:
            conn.execute(row["definition"])
        log.append(f"- {row['kind']} {row['name']} rebuilt in {seconds_since(start)}")
    start = time.perf_counter()
    conn.execute("VACUUM ANALYZE jobs")
    conn.execute("VACUUM ANALYZE job_events")
    log.append(f"- VACUUM ANALYZE in {seconds_since(start)}")


def explain(
    conn: psycopg.Connection[DictRow],
    title: str,
    query: str,
    params: dict[str, Any],
    out: list[str],
) -> None:
    """EXPLAIN ANALYZE runs the statement: a DELETE runs in a transaction that is rolled back."""
    with conn.transaction(force_rollback=True):
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, params).fetchall()
    # A batch's 500 ids would fill pages of the doc: shown as {…}.
    plan = UUID_ARRAY.sub("'{…}'", "\n".join(r["QUERY PLAN"] for r in rows))
    out += [
        f"### {title}",
        "",
        "```sql",
        query.strip(),
        "```",
        "",
        "```",
        plan,
        "```",
        "",
    ]


def record_plans(conn: psycopg.Connection[DictRow], now: datetime) -> list[str]:
    out: list[str] = []
    day = {
        "tenant": "default",
        "since": now - timedelta(days=1),
        "until": None,
        "session_id": None,
    }
    month = {**day, "since": None}
    session = {**month, "session_id": "session-42"}
    latest = conn.execute("SELECT id FROM jobs WHERE status = 'completed' ORDER BY created_at DESC LIMIT 1").fetchone()
    assert latest is not None, "the seeded log has completed jobs"
    job_id = latest["id"]
    explain(conn, "Summary timings, last 24 hours", queries.ANALYTICS_TIMINGS, day, out)
    explain(
        conn,
        "Summary timings, all 30 days (every job)",
        queries.ANALYTICS_TIMINGS,
        month,
        out,
    )
    explain(conn, "Summary timings, one session", queries.ANALYTICS_TIMINGS, session, out)
    explain(
        conn,
        "Top tools, last 24 hours",
        queries.ANALYTICS_TOOLS,
        {**day, "top": 10},
        out,
    )
    explain(
        conn,
        "Top tools, all 30 days",
        queries.ANALYTICS_TOOLS,
        {**month, "top": 10},
        out,
    )
    explain(
        conn,
        "Per-job metrics (job_metrics view)",
        queries.JOB_METRICS,
        {"id": job_id, "tenant": "default"},
        out,
    )
    explain(conn, "Jobs by status (/metrics)", queries.JOBS_BY_STATUS, {}, out)
    history = {
        "tenant": "default",
        "session_id": "session-42",
        "before_created_at": None,
        "before_id": None,
        "finished_only": False,
        "limit": 101,
    }
    explain(conn, "A session's runs (history)", queries.SESSION_RUNS, history, out)
    ids = [r["job_id"] for r in conn.execute(queries.SESSION_RUNS, history).fetchall()]
    explain(conn, "Their events (history)", queries.RUN_EVENTS, {"ids": ids}, out)
    explain(
        conn,
        "A page of a job's log (streams, JSON read)",
        queries.READ_EVENTS,
        {"job_id": job_id, "after_seq": 10, "limit": 1000},
        out,
    )
    partitions = partitions_of_rows(conn.execute(queries.EVENT_PARTITIONS).fetchall())
    cutoff = {
        "cutoff": now - timedelta(days=29),
        "lows": [p.low for p in partitions],
        "highs": [p.high for p in partitions],
    }
    explain(
        conn,
        "Retention: what a prune would delete",
        queries.PRUNE_CANDIDATES,
        cutoff,
        out,
    )
    explain(
        conn,
        "Retention: the next batch of jobs",
        queries.PRUNE_NEXT_JOBS,
        {**cutoff, "limit": 500},
        out,
    )
    batch = [r["id"] for r in conn.execute(queries.PRUNE_NEXT_JOBS, {**cutoff, "limit": 500}).fetchall()]
    explain(
        conn,
        "Retention: one slice of events (rolled back)",
        queries.PRUNE_EVENTS,
        {"ids": batch, "limit": 5000},
        out,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--events-per-job", type=int, default=100)
    parser.add_argument("--plans", type=Path, help="write the plans (markdown) here")
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    args = parser.parse_args()

    name = f"rs_bench_{uuid.uuid4().hex[:8]}"
    url = make_url(args.admin_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        upgrade_to_head(url)
        now = datetime.now(UTC)
        log: list[str] = []
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            start = time.perf_counter()
            load(conn, args.events, args.events_per_job, now, log)
            log.append(f"- whole load: {seconds_since(start)}")
            sizes = [f"| {r['name']} | {r['size']} |" for r in conn.execute(SIZES).fetchall()]
            server = conn.execute("SELECT version()").fetchone()
            assert server is not None
            version = server["version"]
            plans = record_plans(conn, now)
        report = [
            f"Generated by `python -m runstream.bench.seed_events --events {args.events}` on {version}.",
            "",
            "Load:",
            "",
            *log,
            "",
            "| relation | size |",
            "|---|---|",
            *sizes,
            "",
            *plans,
        ]
        text = "\n".join(report)
        if args.plans:
            args.plans.write_text(text)
        print(text)
        if args.keep:
            print(f"kept: {url}")
    finally:
        if not args.keep:
            with psycopg.connect(args.admin_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
