"""job_events partitioned by job id ranges (monthly, through UUIDv7 job ids)

Revision ID: 0011_partitioned_events
Revises: 0010_handbacks
Create Date: 2026-12-04

The existing table becomes the DEFAULT partition of a new partitioned
``job_events``, renamed and attached as it is: no row is copied or moved, so
the conversion takes about as long on a full database as on an empty one (the
attach checks nothing: the default is the only partition then). Then this
month's partition and the next ones are created (db/partitions.py); each moves
the default's rows of its id range into itself first, so old random ids that
happen to fall in a new month's range are carried along, never lost.

Views over ``job_events`` (the analytics views) name the table by identity, so
they would keep reading the old table: each is dropped and created again, from
its definition as the database has it (whatever revision last defined it).
"""

from datetime import UTC, datetime

from alembic import op

from runstream.db.partitions import MONTHS_AHEAD, creation_statements, months_ahead

revision = "0011_partitioned_events"
down_revision = "0010_handbacks"
branch_labels = None
depends_on = None

# Views that read job_events, directly or through another view, with the
# depth of that dependency (create in ascending depth, drop in descending).
DEPENDENT_VIEWS = """
WITH RECURSIVE dependents(oid, depth) AS (
    SELECT r.ev_class, 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = 'job_events'::regclass
      AND r.ev_class <> 'job_events'::regclass
    UNION
    SELECT r.ev_class, t.depth + 1 FROM dependents t
    JOIN pg_depend d ON d.refobjid = t.oid AND d.classid = 'pg_rewrite'::regclass
    JOIN pg_rewrite r ON r.oid = d.objid AND r.ev_class <> t.oid
)
SELECT quote_ident(c.relname) AS name, pg_get_viewdef(c.oid) AS definition, max(t.depth) AS depth
FROM dependents t JOIN pg_class c ON c.oid = t.oid
WHERE c.relkind = 'v'
GROUP BY c.oid, c.relname
ORDER BY depth, name
"""

PARTITIONED_TABLE = """
CREATE TABLE job_events (
    job_id uuid NOT NULL,
    seq bigint NOT NULL,
    attempt integer NOT NULL,
    type text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT job_events_pkey PRIMARY KEY (job_id, seq),
    CONSTRAINT job_events_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE
) PARTITION BY RANGE (job_id)
"""

# As in 0002: tool events are few; the tool statistics read only them.
TOOLS_INDEX = """
CREATE INDEX job_events_tools ON job_events (job_id, attempt, seq)
WHERE type IN ('tool_call', 'tool_result')
"""


def _connection():
    """The migration's own psycopg connection (same transaction): psycopg.sql
    statements run as composed, and view text is sent without parameter parsing."""
    return op.get_bind().connection.driver_connection


def _drop_dependent_views(conn) -> list[tuple[str, str]]:
    views = [(name, definition) for name, definition, _ in conn.execute(DEPENDENT_VIEWS).fetchall()]
    for name, _ in reversed(views):
        conn.execute(f"DROP VIEW {name}")
    return views


def _create_views(conn, views: list[tuple[str, str]]) -> None:
    for name, definition in views:
        conn.execute(f"CREATE VIEW {name} AS {definition}")


def upgrade() -> None:
    conn = _connection()
    views = _drop_dependent_views(conn)
    conn.execute("ALTER TABLE job_events RENAME TO job_events_default")
    conn.execute("ALTER INDEX job_events_pkey RENAME TO job_events_default_pkey")
    conn.execute("ALTER INDEX job_events_tools RENAME TO job_events_default_tools")
    conn.execute(
        "ALTER TABLE job_events_default RENAME CONSTRAINT job_events_job_id_fkey TO job_events_default_job_id_fkey"
    )
    conn.execute(PARTITIONED_TABLE)
    conn.execute(TOOLS_INDEX)
    conn.execute("ALTER TABLE job_events ATTACH PARTITION job_events_default DEFAULT")
    for partition in months_ahead(datetime.now(UTC), MONTHS_AHEAD):
        for statement in creation_statements(partition):
            conn.execute(statement)
    _create_views(conn, views)


def downgrade() -> None:
    conn = _connection()
    views = _drop_dependent_views(conn)
    conn.execute("CREATE TABLE job_events_flat (LIKE job_events INCLUDING DEFAULTS)")
    conn.execute("INSERT INTO job_events_flat SELECT * FROM job_events")
    conn.execute("DROP TABLE job_events")
    conn.execute("ALTER TABLE job_events_flat RENAME TO job_events")
    conn.execute("ALTER TABLE job_events ADD CONSTRAINT job_events_pkey PRIMARY KEY (job_id, seq)")
    conn.execute(
        "ALTER TABLE job_events ADD CONSTRAINT job_events_job_id_fkey"
        " FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE"
    )
    conn.execute(TOOLS_INDEX)
    _create_views(conn, views)
