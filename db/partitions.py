"""The event log's partitions: ``job_events`` is range-partitioned by job id.

Job ids are UUIDv7 (made here, in Python: Postgres makes them only from 18 on).
Their first 48 bits are the creation time in milliseconds, and Postgres orders
uuids bytewise, so a range of job ids is a range of creation times. One
partition holds the events of the jobs created in one calendar month:

* ``(job_id, seq)`` stays the primary key, and every read of a job's events
  (``WHERE job_id = ? AND seq > ?``) is pruned to one partition and reads its
  primary key index: no read probes the other partitions.
* a job's events all land in one partition, however long it runs, so
  retention drops whole partitions and never cuts a run in two.

``job_events_default`` (the DEFAULT partition) catches every id outside the
monthly ranges: the random (v4) ids of jobs created before this scheme (the
migration makes the old table this partition, without copying a row), and
anything whose month has no partition yet. Creating a month's partition moves
the default's rows of that range into it first, so nothing is ever refused or
lost. Partitions are created ahead of time by every worker's reaper
(``ensure_partitions``), under an advisory lock, so several workers create
each one once.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import uuid6
from psycopg import sql

from runstream.db import queries
from runstream.db.connector import Connection, Pool

DEFAULT_PARTITION = "job_events_default"
# Months of partitions made ahead of the current one: a worker that does not
# run its reaper for this long still finds every new job's partition there.
MONTHS_AHEAD = 2
_BOUND = re.compile(r"FROM \('([0-9a-f-]{36})'\) TO \('([0-9a-f-]{36})'\)")


def new_job_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so it names the partition its events go to."""
    return uuid.UUID(int=uuid6.uuid7().int)


def job_id_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 for a job created at ``moment`` (seeding data of the past: tests, bench)."""
    random_a, random_b = secrets.randbits(12), secrets.randbits(62)
    return uuid.UUID(int=(_millis(moment) << 80) | (0x7 << 76) | (random_a << 64) | (0b10 << 62) | random_b)


def id_floor(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of ``moment``'s millisecond: a partition bound."""
    return uuid.UUID(int=_millis(moment) << 80)


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _moment(bound: uuid.UUID) -> datetime:
    return datetime.fromtimestamp((bound.int >> 80) / 1000, UTC)


@dataclass(frozen=True)
class Partition:
    """The events of the jobs created in [start, end)."""

    name: str
    start: datetime
    end: datetime

    @property
    def low(self) -> uuid.UUID:
        return id_floor(self.start)

    @property
    def high(self) -> uuid.UUID:
        return id_floor(self.end)

    @classmethod
    def of_month(cls, moment: datetime) -> Partition:
        moment = moment.astimezone(UTC)
        start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
        return cls(f"job_events_y{start.year:04d}m{start.month:02d}", start, end)

    def next(self) -> Partition:
        return Partition.of_month(self.end)

    def describe(self) -> str:
        return f"{self.name} (jobs created {self.start:%Y-%m-%d} .. {self.end:%Y-%m-%d})"


def months_ahead(now: datetime, ahead: int) -> list[Partition]:
    """The partitions that must exist at ``now``: this month's and ``ahead`` more."""
    months = [Partition.of_month(now)]
    for _ in range(ahead):
        months.append(months[-1].next())
    return months


def creation_statements(partition: Partition) -> list[sql.Composed]:
    """Create ``partition``, attached, with the default's rows of its range moved
    into it first (attaching over rows the default still holds would fail)."""
    names = {"partition": sql.Identifier(partition.name), "default": sql.Identifier(DEFAULT_PARTITION)}
    bounds = {"low": sql.Literal(str(partition.low)), "high": sql.Literal(str(partition.high))}
    return [
        sql.SQL(queries.CREATE_EVENT_PARTITION_TABLE).format(**names),
        sql.SQL(queries.MOVE_DEFAULT_EVENTS).format(**names, **bounds),
        sql.SQL(queries.ATTACH_EVENT_PARTITION).format(**names, **bounds),
    ]


async def attached_partitions(conn: Connection) -> list[Partition]:
    """The range partitions of ``job_events``, oldest first (the default is not one)."""
    cur = await conn.execute(queries.EVENT_PARTITIONS)
    return partitions_of_rows(await cur.fetchall())


def partitions_of_rows(rows: Iterable[Mapping[str, Any]]) -> list[Partition]:
    """EVENT_PARTITIONS's rows as partitions, oldest first."""
    found = []
    for row in rows:
        if match := _BOUND.search(row["bound"]):
            low, high = (uuid.UUID(b) for b in match.groups())
            found.append(Partition(row["name"], _moment(low), _moment(high)))
    return sorted(found, key=lambda p: p.start)


async def ensure_partitions(pool: Pool, now: datetime, ahead: int = MONTHS_AHEAD) -> list[Partition]:
    """Create this month's partition and ``ahead`` more where missing; answers those created."""
    created = []
    async with pool.connection() as conn:
        have = {p.start for p in await attached_partitions(conn)}
        for partition in months_ahead(now, ahead):
            if partition.start in have:
                continue
            async with conn.transaction():
                await conn.execute(queries.LOCK_EVENT_PARTITIONS)
                # Another worker may have made it while this one waited for the lock.
                if partition.start in {p.start for p in await attached_partitions(conn)}:
                    continue
                for statement in creation_statements(partition):
                    await conn.execute(statement)
            created.append(partition)
    return created
