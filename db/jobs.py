"""Job rows: the state machine. Every transition is one guarded UPDATE.

pending ──claim──▶ running ──finish──▶ completed | failed | cancelled
   ▲                  │
   └────release───────┘   (a transient failure, or its worker shutting down, hands the job back)
pending ──cancel──▶ cancelled          (at once, by the API)
pending (queued) ──its session's active run ends──▶ pending   (the jobs_ended trigger)
running ──claim (heartbeat stale)──▶ running, attempt + 1
pending | running (stuck, out of attempts) ──reaper──▶ failed   (tasks.reaper)
running ──pause (a tool needs a person)──▶ paused ──continue (answers)──▶ pending
paused ──cancel──▶ cancelled          (at once, by the API)
paused (unanswered for pause_timeout_s) ──reaper──▶ failed "pause timed out"
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import class_row, kwargs_row
from psycopg.types.json import Jsonb

from runstream.db import queries
from runstream.db.connector import Connection, Pool, one_row
from runstream.db.events import AppendBatch, append_in
from runstream.db.partitions import new_job_id
from runstream.db.status import Status

CANCELLED_EVENT = {"type": "done", "status": Status.CANCELLED}
# The error of a job handed back by a worker going down (the reason its next
# attempt's ``retry`` event gives).
SHUTDOWN_ERROR = "worker shut down"
PAUSE_TIMED_OUT = "pause timed out"


@dataclass(frozen=True, slots=True)
class JobRow:
    """A row of ``jobs`` as the queries that answer whole jobs read it
    (``queries.JOB_COLUMNS``, by name; psycopg's class_row makes it)."""

    id: uuid.UUID
    tenant: str
    session_id: str | None
    message: str
    model: str
    status: Status
    attempt: int
    last_seq: int
    cancel_requested_at: datetime | None
    error: str | None
    metadata: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker: str | None
    # Set while it waits behind its session's active run: its place in the line.
    queued_at: datetime | None
    interrupted_at: datetime | None
    webhook_url: str | None
    user_id: str | None
    agent: str | None
    output: Any
    requirements: list[dict[str, Any]] | None
    answers: list[dict[str, Any]] | None
    paused_at: datetime | None
    paused_s: float
    # The attempts used before the latest continuation of a paused run.
    attempt_base: int

    def __post_init__(self) -> None:
        # The column is text: the row holds (and so checks) the enum's member.
        object.__setattr__(self, "status", Status(self.status))


def job_rows(conn: Connection) -> AsyncCursor[JobRow]:
    """A cursor whose rows are JobRows: for the statements that return ``queries.JOB_COLUMNS``."""
    return conn.cursor(row_factory=class_row(JobRow))


@dataclass(frozen=True)
class Claim:
    """A job this worker now runs, and why this attempt started."""

    job: JobRow
    previous_status: Status
    previous_error: str | None
    # Attempts before this one handed back by a worker shutting down (since the
    # latest continuation of a paused run, which starts the count afresh).
    handbacks: int

    @classmethod
    def from_row(cls, *, prev_status: str, prev_error: str | None, handbacks: int, **job: Any) -> Claim:
        """A row of ``queries.CLAIM_JOB``: the job, then why it was claimed."""
        return cls(JobRow(**job), Status(prev_status), prev_error, handbacks)

    @property
    def id(self) -> uuid.UUID:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def counted_attempts(self) -> int:
        """The attempts so far, this one included, that count against ``max_attempts``."""
        return self.attempt - self.job.attempt_base - self.handbacks


@dataclass(frozen=True)
class CreationLimits:
    """What one tenant may create: ``rate`` jobs per ``window_s`` seconds, and
    ``active`` jobs pending or running at once. 0 turns a limit off."""

    rate: int
    window_s: int
    active: int

    def check(self, load: dict[str, Any]) -> None:
        if self.rate and load["recent"] >= self.rate:
            raise LimitExceeded("rate", self.rate, self.window_s, math.ceil(load["window_ends_in_s"] or 1))
        if self.active and load["active"] >= self.active:
            raise LimitExceeded("active", self.active, self.window_s, ACTIVE_RETRY_AFTER_S)


# A job's end is not known in advance: a tenant at its active-job limit is told to
# try again after this long.
ACTIVE_RETRY_AFTER_S = 5


class LimitExceeded(Exception):
    """A tenant is at a creation limit (``kind``: "rate" or "active"); nothing was written."""

    def __init__(self, kind: str, limit: int, window_s: int, retry_after_s: int):
        super().__init__(f"{kind} limit {limit} reached")
        self.kind = kind
        self.limit = limit
        self.window_s = window_s
        self.retry_after_s = max(1, retry_after_s)


class SessionBusy(Exception):
    """The session has an active run and the new job's policy is ``reject``; nothing was written."""

    def __init__(self, active: JobRow):
        super().__init__(f"session busy with job {active.id}")
        self.active = active


async def create_job(
    pool: Pool,
    *,
    tenant: str,
    message: str,
    model: str,
    user_id: str | None = None,
    session_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    agent: str | None = None,
    job_id: uuid.UUID | None = None,
    limits: CreationLimits | None = None,
    if_busy: str = "enqueue",
    webhook_url: str | None = None,
) -> JobRow:
    """Insert a pending job. Under ``limits``, raises LimitExceeded instead when the
    tenant is at one, checked and inserted in one transaction.

    In a session whose run is still active (``if_busy``): ``reject`` raises
    SessionBusy; otherwise the job is queued (``queued_at`` set, never
    dispatched) behind it, ``interrupt`` and ``rollback`` at the head of the
    line, in the run's own place (the caller then calls ``interrupt_active_run``).
    The session lock and the one-active-run index make this race-free."""
    params = {
        "id": job_id or new_job_id(),
        "tenant": tenant,
        "user_id": user_id,
        "session_id": session_id,
        "message": message,
        "model": model,
        "agent": agent,
        "metadata": Jsonb(metadata or {}),
        "webhook_url": webhook_url,
        "queued": False,
        "queued_at": None,
    }
    limited = limits is not None and bool(limits.rate or limits.active)
    async with pool.connection() as conn:
        if not limited and session_id is None:
            return await one_row(await job_rows(conn).execute(queries.INSERT_JOB, params))
        async with conn.transaction():
            if limited:
                assert limits is not None
                await conn.execute(queries.LOCK_TENANT_JOBS, {"tenant": tenant})
                cur = await conn.execute(queries.TENANT_JOB_LOAD, {"tenant": tenant, "window_s": limits.window_s})
                limits.check(await one_row(cur))
            if session_id is not None:
                where = {"tenant": tenant, "session_id": session_id}
                await conn.execute(queries.LOCK_SESSION, where)
                active = await (await job_rows(conn).execute(queries.SESSION_ACTIVE_JOB, where)).fetchone()
                if active is not None:
                    if if_busy == "reject":
                        raise SessionBusy(active)
                    params["queued"] = True
                    if if_busy in ("interrupt", "rollback"):
                        params["queued_at"] = active.created_at
            return await one_row(await job_rows(conn).execute(queries.INSERT_JOB, params))


async def interrupt_active_run(pool: Pool, job: JobRow, *, rollback: bool) -> uuid.UUID | None:
    """Cancel the run active in ``job``'s session (``job`` waits behind it), marked
    interrupted, and with ``rollback`` left out of the conversation. Answers its
    id, None when it had ended already (``job`` then is the active one, or next)."""
    where = {"tenant": job.tenant, "session_id": job.session_id}
    async with pool.connection() as conn, conn.transaction():
        active = await (await job_rows(conn).execute(queries.SESSION_ACTIVE_JOB + " FOR UPDATE", where)).fetchone()
        if active is None or active.id == job.id:
            return None
        await conn.execute(queries.MARK_INTERRUPTED, {"id": active.id, "rollback": rollback})
        await _cancel_in(conn, active)
    return active.id


@dataclass(frozen=True)
class Followups:
    """What the end of some jobs leaves to send to the broker: the next runs of
    their sessions, and their webhook deliveries."""

    runs: list[uuid.UUID]
    webhooks: list[str]


async def after_jobs_ended(pool: Pool, job_ids: list[uuid.UUID]) -> Followups:
    if not job_ids:
        return Followups([], [])
    async with pool.connection() as conn:
        cur = await conn.execute(queries.AFTER_JOBS_ENDED, {"ids": job_ids})
        rows = await cur.fetchall()
    return Followups(
        [uuid.UUID(r["ref"]) for r in rows if r["kind"] == "run"], [r["ref"] for r in rows if r["kind"] == "webhook"]
    )


async def get_job(pool: Pool, job_id: uuid.UUID, tenant: str) -> JobRow | None:
    async with pool.connection() as conn:
        return await (await job_rows(conn).execute(queries.GET_JOB, {"id": job_id, "tenant": tenant})).fetchone()


async def list_jobs(
    pool: Pool,
    *,
    tenant: str,
    limit: int,
    user_id: str | None = None,
    session_id: str | None = None,
    status: Status | None = None,
    agent: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: tuple[datetime, uuid.UUID] | None = None,
) -> list[JobRow]:
    """Newest first; ``created_after``/``created_before`` bound ``created_at`` as [after, before)."""
    params = {
        "tenant": tenant,
        "user_id": user_id,
        "session_id": session_id,
        "status": status,
        "agent": agent,
        "created_after": created_after,
        "created_before": created_before,
        "cursor_created_at": cursor[0] if cursor else None,
        "cursor_id": cursor[1] if cursor else None,
        "limit": limit,
    }
    async with pool.connection() as conn:
        return await (await job_rows(conn).execute(queries.LIST_JOBS, params)).fetchall()


async def set_job_output(pool: Pool, job_id: uuid.UUID, *, attempt: int, output: Any) -> None:
    """Keep a run's structured answer on its job (only while ``attempt`` runs it)."""
    async with pool.connection() as conn:
        await conn.execute(queries.SET_JOB_OUTPUT, {"id": job_id, "attempt": attempt, "output": Jsonb(output)})


async def claim_job(
    pool: Pool,
    job_id: uuid.UUID,
    *,
    worker: str,
    stale_after_s: float,
    max_attempts: int | None = None,
) -> Claim | None:
    """Take the job for a new attempt, or None when it is not ours to run
    (finished, cancelled, running elsewhere with a live heartbeat, a dead run
    whose cancel was requested, or out of attempts: the reaper ends those two)."""
    params = {"id": job_id, "worker": worker, "stale_after_s": stale_after_s, "max_attempts": max_attempts}
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=kwargs_row(Claim.from_row))
        return await (await cur.execute(queries.CLAIM_JOB, params)).fetchone()


async def heartbeat(pool: Pool, running: dict[uuid.UUID, int]) -> dict[uuid.UUID, datetime | None]:
    """Touch every (job, attempt) this worker runs. Answers {job_id: cancel_requested_at}
    for the jobs still ours; a job missing from the answer was taken from us."""
    if not running:
        return {}
    params = {"ids": list(running), "attempts": list(running.values())}
    async with pool.connection() as conn:
        cur = await conn.execute(queries.HEARTBEAT, params)
        return {r["id"]: r["cancel_requested_at"] for r in await cur.fetchall()}


async def cancel_requests(pool: Pool, job_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    if not job_ids:
        return set()
    async with pool.connection() as conn:
        cur = await conn.execute(queries.CANCEL_REQUESTS, {"ids": job_ids})
        return {r["id"] for r in await cur.fetchall()}


async def cancel_job(pool: Pool, job_id: uuid.UUID, tenant: str) -> Status | None:
    """Idempotent cancel. Answers the job's status afterwards, None if there is no such job.

    A pending or paused job is cancelled at once: status and its ``done`` event
    in one transaction. A running job gets ``cancel_requested_at``; its worker stops it and
    appends the terminal event. A finished job is left as it is.
    """
    async with pool.connection() as conn:
        async with conn.transaction():
            cur = await job_rows(conn).execute(queries.GET_JOB + " FOR UPDATE", {"id": job_id, "tenant": tenant})
            job = await cur.fetchone()
            if job is None:
                return None
            return await _cancel_in(conn, job)


async def _cancel_in(conn: Connection, job: JobRow) -> Status:
    """Cancel ``job`` (its row locked by the caller's transaction); answers its status afterwards."""
    if job.status in (Status.PENDING, Status.PAUSED):
        [result] = await append_in(
            conn, [AppendBatch(job.id, [CANCELLED_EVENT], from_statuses=(job.status,), new_status=Status.CANCELLED)]
        )
        # The row is locked in this status, so the batch applies.
        return Status.CANCELLED if result.applied else job.status
    if job.status == Status.RUNNING:
        await conn.execute(queries.REQUEST_CANCEL, {"id": job.id, "tenant": job.tenant})
    return job.status


async def release_job(
    pool: Pool, job_id: uuid.UUID, *, attempt: int, error: str, delay_s: float = 0.0, handback: bool = False
) -> bool:
    """Hand a running job back as pending, for a retry in ``delay_s`` seconds: a
    transient failure, or (``handback``) its worker shutting down, an attempt that
    did not fail and does not count against ``max_attempts``."""
    params = {"id": job_id, "attempt": attempt, "error": error, "delay_s": delay_s, "handback": handback}
    async with pool.connection() as conn:
        cur = await conn.execute(queries.RELEASE_JOB, params)
        return await cur.fetchone() is not None


@dataclass(frozen=True)
class ReapLimits:
    """When a job counts as stuck, and how many attempts it gets (the settings)."""

    pending_timeout_s: float
    stale_after_s: float
    max_attempts: int
    # Jobs per statement: a backlog is worked through a bounded bite per tick.
    limit: int = 500


async def mark_stuck_for_dispatch(pool: Pool, limits: ReapLimits) -> list[uuid.UUID]:
    """Stuck jobs with attempts left, each marked as dispatched now; the caller sends them.
    Several reapers at once each get their own jobs, none twice within a threshold."""
    params = {
        "pending_timeout_s": limits.pending_timeout_s,
        "stale_after_s": limits.stale_after_s,
        "max_attempts": limits.max_attempts,
        "limit": limits.limit,
    }
    async with pool.connection() as conn:
        cur = await conn.execute(queries.REAP_DISPATCH, params)
        return [row["id"] for row in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class StuckJob:
    """A job the reaper ends (a row of ``queries.REAP_FINISH``)."""

    id: uuid.UUID
    status: Status
    attempt: int
    # The attempts since the latest continuation of a paused run.
    run_attempts: int
    error: str | None
    cancel_requested_at: datetime | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))

    def terminal(self) -> tuple[dict[str, Any], Status, str | None]:
        """The terminal event, status and error the reaper ends it with."""
        if self.status == Status.RUNNING and self.cancel_requested_at is not None:
            return CANCELLED_EVENT, Status.CANCELLED, None
        reason = "worker lost" if self.status == Status.RUNNING else self.error or "not run"
        message = f"gave up after {self.run_attempts} attempts: {reason}"
        return {"type": "error", "message": message}, Status.FAILED, message


async def finish_stuck(pool: Pool, limits: ReapLimits) -> list[tuple[uuid.UUID, Status]]:
    """End the stuck jobs that get no more attempts (out of attempts, or a dead run
    that was asked to cancel): each gets its terminal event and final status in ONE
    transaction, under the row locks taken when it was picked. Answers (job_id, status)."""
    params = {
        "stale_after_s": limits.stale_after_s,
        "max_attempts": limits.max_attempts,
        "limit": limits.limit,
    }
    async with pool.connection() as conn, conn.transaction():
        cur = conn.cursor(row_factory=class_row(StuckJob))
        jobs = await (await cur.execute(queries.REAP_FINISH, params)).fetchall()
        if not jobs:
            return []
        batches = []
        for job in jobs:
            payload, status, error = job.terminal()
            batches.append(
                AppendBatch(
                    job.id, [payload], from_statuses=(job.status,), attempt=job.attempt, new_status=status, error=error
                )
            )
        results = await append_in(conn, batches)
    return [(b.job_id, b.new_status) for b, r in zip(batches, results, strict=True) if r.applied and b.new_status]


async def save_paused_run(
    pool: Pool,
    job_id: uuid.UUID,
    *,
    attempt: int,
    paused_run: dict[str, Any],
    requirements: list[dict[str, Any]],
) -> bool:
    """Keep a paused run on its job row (still running, this attempt's); False when
    the job is no longer this attempt's."""
    params = {
        "id": job_id,
        "attempt": attempt,
        "paused_run": Jsonb(paused_run),
        "requirements": Jsonb(requirements),
    }
    async with pool.connection() as conn:
        cur = await conn.execute(queries.SAVE_PAUSED_RUN, params)
        return await cur.fetchone() is not None


async def paused_run(pool: Pool, job_id: uuid.UUID) -> dict[str, Any] | None:
    """The run a paused job kept (save_paused_run), to continue it."""
    async with pool.connection() as conn:
        cur = await conn.execute(queries.PAUSED_RUN, {"id": job_id})
        row = await cur.fetchone()
    return row["paused_run"] if row else None


class NotPaused(Exception):
    """A continue for a job that is not waiting for a person; nothing was written."""

    def __init__(self, status: Status):
        super().__init__(f"job is {status}, not paused")
        self.status = status


async def continue_job(
    pool: Pool,
    job_id: uuid.UUID,
    tenant: str,
    check: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    received: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> JobRow | None:
    """Answer a paused job: ``check(requirements)`` returns the answers (or raises,
    and nothing is written); then, in one transaction under the row lock, the
    ``received(answers)`` event is appended, the job moves to pending and keeps
    the answers. Answers the job afterwards, None if there is no such job; raises
    NotPaused when it is not paused (two continues of one pause: the second)."""
    where = {"id": job_id, "tenant": tenant}
    async with pool.connection() as conn, conn.transaction():
        job = await (await job_rows(conn).execute(queries.GET_JOB + " FOR UPDATE", where)).fetchone()
        if job is None:
            return None
        if job.status != Status.PAUSED:
            raise NotPaused(job.status)
        answers = check(job.requirements or [])
        [result] = await append_in(
            conn,
            [AppendBatch(job_id, [received(answers)], from_statuses=(Status.PAUSED,), new_status=Status.PENDING)],
        )
        assert result.applied, "the row lock holds the job paused"
        await conn.execute(queries.ACCEPT_ANSWERS, {"id": job_id, "answers": Jsonb(answers)})
        return await (await job_rows(conn).execute(queries.GET_JOB, where)).fetchone()


async def finish_timed_out_pauses(pool: Pool, pause_timeout_s: float, limit: int = 500) -> list[uuid.UUID]:
    """End the paused jobs nobody answered within ``pause_timeout_s``: each gets
    the error event "pause timed out" and status failed, in one transaction."""
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(queries.REAP_PAUSED, {"pause_timeout_s": pause_timeout_s, "limit": limit})
        ids = [row["id"] for row in await cur.fetchall()]
        if not ids:
            return []
        payload = {"type": "error", "message": PAUSE_TIMED_OUT}
        batches = [
            AppendBatch(
                job_id, [payload], from_statuses=(Status.PAUSED,), new_status=Status.FAILED, error=PAUSE_TIMED_OUT
            )
            for job_id in ids
        ]
        results = await append_in(conn, batches)
    return [b.job_id for b, r in zip(batches, results, strict=True) if r.applied]
