"""The partitioned event log: the migration on a database with data in it, the
partitions made ahead of time, reads pruned to one partition, and retention by
partition (tests/test_operations.py covers the batched delete of older rows)."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from alembic import command
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from rich.console import Console

from runstream.db import queries
from runstream.db.connector import open_pool
from runstream.db.jobs import create_job
from runstream.db.migrate import alembic_config
from runstream.db.partitions import (
    MONTHS_AHEAD,
    Partition,
    attached_partitions,
    ensure_partitions,
    job_id_at,
    months_ahead,
)
from runstream.db.retention import detach_partition
from runstream.prune import run_prune
from tests.conftest import create_database, drop_database

ASYNC = pytest.mark.asyncio(loop_scope="session")
NOW = datetime.now(UTC)
BEFORE_PARTITIONS = "0010_handbacks"


def insert_job(
    conn: psycopg.Connection,
    job_id: uuid.UUID,
    status: str,
    finished_at: datetime | None,
    payloads: list[dict[str, Any]],
) -> None:
    conn.execute(
        "INSERT INTO jobs (id, message, model, status, attempt, last_seq, created_at, started_at, finished_at)"
        " VALUES (%s, 'x', 'offline', %s, 1, %s, %s, %s, %s)",
        (job_id, status, len(payloads) - 1, NOW - timedelta(days=400), NOW - timedelta(days=400), finished_at),
    )
    for seq, payload in enumerate(payloads):
        conn.execute(
            "INSERT INTO job_events (job_id, seq, attempt, type, payload) VALUES (%s, %s, 1, %s, %s)",
            (job_id, seq, payload["type"], Jsonb(payload)),
        )


def run_events(words: int, *, tool: bool = False) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"type": "reasoning", "text": "hmm"}]
    if tool:
        events += [
            {"type": "tool_call", "tool_name": "calculate", "argument": "{}", "call_id": "c1"},
            {"type": "tool_result", "call_id": "c1", "output": "error: no"},
        ]
    events += [{"type": "text_delta", "delta": f"w{i} "} for i in range(words)]
    return events + [{"type": "done", "status": "completed"}]


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Every event row, every view's definition (as the revisions before left
    it), and what each analytics view answers."""
    return {
        "views": conn.execute(
            "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY viewname"
        ).fetchall(),
        "events": conn.execute(
            "SELECT job_id, seq, attempt, type, payload, created_at FROM job_events ORDER BY job_id, seq"
        ).fetchall(),
        "job_metrics": conn.execute(
            "SELECT job_id, events, events_by_type, text_chars, tool_calls, ttft_s FROM job_metrics ORDER BY job_id"
        ).fetchall(),
        "tool_call_results": conn.execute(
            "SELECT job_id, seq, tool_name, output, is_error FROM tool_call_results ORDER BY job_id, seq"
        ).fetchall(),
    }


def partition_of(conn: psycopg.Connection) -> dict[uuid.UUID, set[str]]:
    rows = conn.execute("SELECT DISTINCT job_id, tableoid::regclass::text AS part FROM job_events").fetchall()
    found: dict[uuid.UUID, set[str]] = {}
    for job_id, part in rows:
        found.setdefault(job_id, set()).add(part)
    return found


def relkind(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT relkind FROM pg_class WHERE relname = 'job_events'").fetchone()[0]


def test_migration_keeps_every_row_and_the_views() -> None:
    database_url = create_database("rs_partmig", revision=BEFORE_PARTITIONS)
    config = alembic_config(database_url)
    this_month, next_month = months_ahead(NOW, 1)
    legacy = uuid.UUID("f3b1c7a8-0000-4000-8000-000000000001")
    current = job_id_at(NOW)
    # A random (v4) id that falls in next month's range: its partition takes it over.
    in_next_range = uuid.UUID(int=job_id_at(next_month.start + timedelta(days=3)).int & ~(0xF << 76) | (0x4 << 76))
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            insert_job(conn, legacy, "completed", NOW, run_events(3, tool=True))
            insert_job(conn, current, "completed", NOW, run_events(5))
            insert_job(conn, in_next_range, "failed", NOW, run_events(2, tool=True))
            before = snapshot(conn)
            assert len(before["events"]) == 7 + 7 + 6 and relkind(conn) == "r"
            # The views as the latest earlier revision defined them (with its agent column).
            assert [name for name, _ in before["views"]] == ["job_metrics", "job_timings", "tool_call_results"]
            assert all("agent" in definition for _, definition in before["views"])

        command.upgrade(config, "head")
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert relkind(conn) == "p"
            assert snapshot(conn) == before
            assert partition_of(conn) == {
                legacy: {"job_events_default"},
                current: {this_month.name},
                in_next_range: {next_month.name},
            }
            names = {
                r[0]
                for r in conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c"
                    " ON c.oid = i.inhrelid WHERE i.inhparent = 'job_events'::regclass"
                )
            }
            assert names == {"job_events_default", *(p.name for p in months_ahead(NOW, MONTHS_AHEAD))}

        # And back, and forward again: still every row.
        command.downgrade(config, BEFORE_PARTITIONS)
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert relkind(conn) == "r" and snapshot(conn) == before
        command.upgrade(config, "head")
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert relkind(conn) == "p" and snapshot(conn) == before
    finally:
        drop_database(database_url)


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_pool() -> AsyncIterator[AsyncConnectionPool]:
    database_url = create_database("rs_parts")
    pool = await open_pool(database_url, 3, name="partition-tests")
    yield pool
    await pool.close()
    drop_database(database_url)


async def fetch_all(pool: AsyncConnectionPool, query: str, params: Any = None) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(query, params)).fetchall()


@ASYNC
async def test_new_job_ids_are_time_ordered_and_reads_touch_one_partition(fresh_pool: AsyncConnectionPool) -> None:
    jobs = [await create_job(fresh_pool, tenant="t", message="m", model="offline") for _ in range(3)]
    ids = [job.id for job in jobs]
    assert all(job_id.version == 7 for job_id in ids)
    assert ids == sorted(ids)
    [plan] = (
        await fetch_all(
            fresh_pool, "EXPLAIN (FORMAT JSON) " + queries.READ_EVENTS, {"job_id": ids[0], "after_seq": -1, "limit": 10}
        )
    )[0].values()
    scanned = [node["Relation Name"] for node in walk(plan[0]["Plan"]) if "Relation Name" in node]
    assert scanned == [Partition.of_month(NOW).name]
    assert {node["Node Type"] for node in walk(plan[0]["Plan"])} <= {"Limit", "Index Scan"}
    # Several jobs in one read: every partition but the job's is removed at run time.
    [plan] = (
        await fetch_all(
            fresh_pool,
            "EXPLAIN (ANALYZE, FORMAT JSON) " + queries.READ_EVENTS_OF_JOBS,
            {"job_ids": ids[:1], "after_seqs": [-1], "limit": 10},
        )
    )[0].values()
    executed = [n["Relation Name"] for n in walk(plan[0]["Plan"]) if "Relation Name" in n and n["Actual Loops"]]
    assert executed == [Partition.of_month(NOW).name]


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)


@ASYNC
async def test_partitions_made_ahead_once_each_taking_over_the_default_rows(fresh_pool: AsyncConnectionPool) -> None:
    later = Partition.of_month(NOW + timedelta(days=31 * (MONTHS_AHEAD + 2)))
    job_id = job_id_at(later.start + timedelta(hours=1))
    async with fresh_pool.connection() as conn:
        await conn.execute("INSERT INTO jobs (id, message, model) VALUES (%s, 'x', 'offline')", (job_id,))
        await conn.execute(
            "INSERT INTO job_events (job_id, seq, attempt, type, payload) VALUES (%s, 0, 1, 'reasoning', '{}')",
            (job_id,),
        )
    where = "SELECT tableoid::regclass::text AS part FROM job_events WHERE job_id = %s"
    assert await fetch_all(fresh_pool, where, (job_id,)) == [{"part": "job_events_default"}]
    # Three workers' reapers at once: each partition is made once.
    made = await asyncio.gather(*(ensure_partitions(fresh_pool, later.start, ahead=1) for _ in range(3)))
    assert sorted(p.name for batch in made for p in batch) == [later.name, later.next().name]
    assert await fetch_all(fresh_pool, where, (job_id,)) == [{"part": later.name}]
    assert await ensure_partitions(fresh_pool, later.start, ahead=1) == []


@ASYNC
async def test_retention_drops_whole_partitions(fresh_pool: AsyncConnectionPool) -> None:
    old = Partition.of_month(Partition.of_month(NOW).start - timedelta(days=100))  # at least 3 months back
    older_than = timedelta(days=40)
    assert old.next().end <= NOW - older_than
    await ensure_partitions(fresh_pool, old.start, ahead=1)
    in_old = [job_id_at(old.start + timedelta(days=d)) for d in (2, 9)]
    blocked = [job_id_at(old.next().start + timedelta(days=d)) for d in (2, 9)]
    legacy, recent = uuid.uuid4(), job_id_at(NOW)
    seeded = {
        in_old[0]: ("completed", old.start + timedelta(days=3), 3),
        in_old[1]: ("failed", old.start + timedelta(days=10), 2),
        blocked[0]: ("completed", old.next().start + timedelta(days=3), 2),
        blocked[1]: ("running", None, 1),
        legacy: ("completed", NOW - timedelta(days=50), 2),
        recent: ("completed", NOW, 4),
    }
    async with fresh_pool.connection() as conn, conn.transaction():
        for job_id, (status, finished_at, n) in seeded.items():
            await conn.execute(
                "INSERT INTO jobs (id, message, model, status, attempt, last_seq, finished_at)"
                " VALUES (%s, 'x', 'offline', %s, 1, %s, %s)",
                (job_id, status, n - 1, finished_at),
            )
            for seq in range(n):
                await conn.execute(
                    "INSERT INTO job_events (job_id, seq, attempt, type, payload)"
                    " VALUES (%s, %s, 1, 'text_delta', '{}')",
                    (job_id, seq),
                )
    database_url = fresh_pool.conninfo

    out = io.StringIO()
    planned = await run_prune(database_url, older_than, delete=False, console=Console(file=out, width=300))
    lines = out.getvalue().splitlines()
    assert f"partition {old.describe()}: 2 jobs, 5 events: drop" in lines
    assert f"partition {old.next().describe()}: 2 jobs, 3 events: keep (1 jobs unfinished or finished since)" in lines
    assert "outside partitions, deleted in batches: 1 jobs, 2 events" in lines
    assert (planned.jobs, planned.events) == (3, 7)
    assert len(await fetch_all(fresh_pool, "SELECT 1 FROM job_events")) == 3 + 2 + 2 + 1 + 2 + 4

    out = io.StringIO()
    done = await run_prune(database_url, older_than, delete=True, console=Console(file=out, width=300))
    assert (done.jobs, done.events) == (3, 7)
    assert "deleted 3 jobs and 7 events" in out.getvalue()
    gone = await fetch_all(fresh_pool, "SELECT to_regclass(%s) AS t", (old.name,))
    assert gone == [{"t": None}]
    left = await fetch_all(fresh_pool, "SELECT job_id, count(*) AS n FROM job_events GROUP BY job_id")
    assert {r["job_id"]: r["n"] for r in left} == {blocked[0]: 2, blocked[1]: 1, recent: 4}
    jobs_left = {r["id"] for r in await fetch_all(fresh_pool, "SELECT id FROM jobs")}
    assert {blocked[0], blocked[1], recent} <= jobs_left and not jobs_left & {*in_old, legacy}

    # A prune that stopped between detach and drop leaves a table: the next prune drops it.
    earlier = Partition.of_month(old.start - timedelta(days=1))
    await ensure_partitions(fresh_pool, earlier.start, ahead=0)
    assert await detach_partition(fresh_pool, earlier, NOW) is not None
    assert await fetch_all(fresh_pool, "SELECT to_regclass(%s) IS NOT NULL AS t", (earlier.name,)) == [{"t": True}]
    assert earlier not in await partitions_of(fresh_pool)
    await run_prune(database_url, older_than, delete=True, console=Console(file=io.StringIO()))
    assert await fetch_all(fresh_pool, "SELECT to_regclass(%s) IS NOT NULL AS t", (earlier.name,)) == [{"t": False}]


async def partitions_of(pool: AsyncConnectionPool) -> list[Partition]:
    async with pool.connection() as conn:
        return await attached_partitions(conn)
