"""The bench's own statements: baselines and seeding, never run by Runstream itself.

They live with the bench, not in ``db/queries.py``, so the shipped package's
statements are only those Runstream runs; like those, each is named here once.
"""

# The bench's raw-insert baseline (``runstream bench``, ingest): the same rows as
# APPEND_EVENTS writes, with the caller's seqs, and nothing else: no job row
# lock, no NOTIFY. What inserting events costs on this Postgres by itself.
RAW_INSERT_EVENTS = """
INSERT INTO job_events (job_id, seq, attempt, type, payload)
SELECT %(job_id)s, %(first_seq)s + e.ord - 1, 1, e.payload ->> 'type', e.payload
FROM jsonb_array_elements(%(payloads)s::jsonb) WITH ORDINALITY AS e(payload, ord)
"""

# The bench's retention scenario (bench/scenarios/retention.py) seeds with
# generate_series: millions of rows in seconds, not one round trip each.
# Finished jobs with UUIDv7 ids spread over one month from ``start_ms``, whose
# events go to that month's partition.
BENCH_SEED_MONTH_JOBS = """
INSERT INTO jobs (id, message, model, status, attempt, last_seq, created_at, started_at, finished_at)
SELECT (lpad(to_hex(m.ms), 12, '0') || '7000' || '8' || lpad(to_hex(i), 15, '0'))::uuid,
       'bench', 'offline', 'completed', 1, %(per_job)s - 1, m.at, m.at, m.at
FROM generate_series(0, %(jobs)s - 1) AS i,
     LATERAL (SELECT %(start_ms)s::bigint + i * %(step_ms)s::bigint AS ms,
                     to_timestamp((%(start_ms)s::bigint + i * %(step_ms)s::bigint) / 1000.0) AS at) AS m
"""

# Finished jobs with ids outside every partition's range (as random ids of
# jobs from before partitioning are): their events go to the default partition.
BENCH_SEED_OLD_JOBS = """
INSERT INTO jobs (id, message, model, status, attempt, last_seq, created_at, started_at, finished_at)
SELECT ('f' || substr(md5('bench-old-' || i), 2))::uuid, 'bench', 'offline', 'completed', 1,
       %(per_job)s - 1, %(finished_at)s, %(finished_at)s, %(finished_at)s
FROM generate_series(0, %(jobs)s - 1) AS i
"""

BENCH_SEED_EVENTS = """
INSERT INTO job_events (job_id, seq, attempt, type, payload)
SELECT j.id, s, 1, 'text_delta', '{"type": "text_delta", "delta": "word "}'::jsonb
FROM jobs j CROSS JOIN generate_series(0, %(per_job)s - 1) AS s
WHERE j.id >= %(low)s AND j.id < %(high)s
"""

BENCH_SEED_FAST_COMMIT = "SET synchronous_commit = off"

# The bench's delivery floor (``runstream bench``, delivery; bench/floor.py): the
# least any design that commits an event before a LISTEN connection hears of it
# can do per event. One row inserted and notified in one autocommit statement
# (one commit, one WAL flush), no job row, no batching, on a channel no API
# listens to.
FLOOR_NOTIFY_CHANNEL = "runstream_bench_floor"
FLOOR_APPEND_EVENT = f"""
WITH inserted AS (
    INSERT INTO job_events (job_id, seq, attempt, type, payload)
    VALUES (%(job_id)s, %(seq)s, 1, %(payload)s::jsonb ->> 'type', %(payload)s::jsonb)
    RETURNING payload
)
SELECT pg_notify('{FLOOR_NOTIFY_CHANNEL}', payload::text) FROM inserted
"""
