"""Group commit of run events, for every run of one worker process.

Runs call ``emit`` for each payload; it only buffers. Each job belongs to one
of K *lanes* (``Settings.worker_flush_lanes``). Within a lane, one flush at a
time writes what every job of the lane has buffered in ONE transaction
(``db.events.append_many``, one ``AppendBatch`` per job): a flush starts at once
when none is in flight, and while one is in flight new events pile up for the
next. So an idle worker writes each event with no delay, and a busy one writes
many runs' events per commit (a commit that notifies queues behind every other
one, so fewer commits is the throughput).

Why lanes: with a single flush in flight a worker process uses one Postgres
backend, i.e. one core of the database, however many connections its pool has.
K lanes commit concurrently on K connections. They work on DISJOINT sets of
jobs, so a job's batches still go out one after another, each fenced by the
``expected_last_seq`` the previous one left: per-job order and gap-free seqs
need nothing more. The lane is a pure function of the job id, so a job closed
and opened again lands in the lane where its earlier flush may still be running.

Each batch is fenced by the job's ``attempt`` (a worker whose job was taken over
writes nothing) and by ``expected_last_seq`` (the writer is the job's only
writer, so it knows the sequence). A refused batch, or an ``AppendResult`` that
reports a cancel request, is passed to the run through its ``stop_run`` callback.

Terminal events (``finish``) are written with the job's final status in the same
transaction, and the caller waits until they are durable.

Everything here runs on the worker's one event loop: no locks needed (lanes
share no job, and a job's state is only touched by its own lane's flush).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runstream.core.settings import get_settings
from runstream.db.connector import Pool
from runstream.db.errors import DatabaseUnavailable
from runstream.db.events import AppendBatch, AppendResult, append_many, committed_earlier
from runstream.db.status import Status

log = logging.getLogger("runstream.worker")

Payload = dict[str, Any]
# Why the writer wants a run stopped: "cancelled" (a cancel was requested),
# "fenced" (the job was taken from this worker), "lost" (its events cannot be written).
StopRun = Callable[[str], None]

# A run that outpaces the database waits in ``emit`` once this many of its
# events are buffered: memory stays bounded however slow the database is.
MAX_BUFFERED_EVENTS = 1000
# Waits between tries of a flush that failed on a connection error (the pool
# replaces broken connections). Retrying is safe: ``expected_last_seq`` makes a
# batch that did commit refuse to commit twice (see ``_commit``). About 4 s in
# all: a Postgres restart or failover of that order costs the runs nothing.
FLUSH_RETRY_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0)


class WriterError(Exception):
    """A job's events could not be written."""


@dataclass(frozen=True)
class _Written:
    """How a flush ended for one job: its AppendResult, or the error that stopped it."""

    result: AppendResult | None = None
    error: BaseException | None = None


@dataclass
class _JobLog:
    job_id: uuid.UUID
    attempt: int
    last_seq: int
    stop_run: StopRun
    buffer: list[Payload] = field(default_factory=list)
    # (status, error) once the terminal payload is in ``buffer``.
    final: tuple[Status, str | None] | None = None
    finished: bool = False
    fenced: bool = False
    # The lane that flushes this job, for its whole life in this writer.
    lane: _Lane | None = None
    # Resolved by the flush that takes ``buffer``; created only when someone waits.
    next_write: asyncio.Future[_Written] | None = None
    # The flush now carrying this job's events.
    in_flight: asyncio.Future[_Written] | None = None


class _Lane:
    """One flush at a time over the jobs assigned to it (see the module docstring)."""

    def __init__(self, writer: EventWriter):
        self._writer = writer
        self.jobs: dict[uuid.UUID, _JobLog] = {}
        self._flushing: asyncio.Task[None] | None = None

    def kick(self) -> None:
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_until_empty())

    async def _flush_until_empty(self) -> None:
        writer = self._writer
        try:
            while True:
                jobs = [job for job in self.jobs.values() if job.buffer]
                if not jobs:
                    return
                outcome = await writer._commit([writer._take(job) for job in jobs])
                for i, job in enumerate(jobs):
                    if isinstance(outcome, BaseException):
                        writer._fail(job, outcome)
                    else:
                        writer._settle(job, outcome[i])
        finally:
            self._flushing = None


class EventWriter:
    def __init__(
        self,
        pool: Pool,
        *,
        lanes: int | None = None,
        max_buffered: int = MAX_BUFFERED_EVENTS,
        retry_delays_s: Sequence[float] = FLUSH_RETRY_DELAYS_S,
    ):
        self._pool = pool
        self._max_buffered = max_buffered
        self._retry_delays_s = tuple(retry_delays_s)
        self._logs: dict[uuid.UUID, _JobLog] = {}
        if lanes is None:
            lanes = get_settings().worker_flush_lanes
        # Each lane in flight holds a pool connection; one is always left over so the
        # supervisor (heartbeats, cancel polls) and the reaper are never starved by
        # a busy writer.
        lanes = max(1, min(lanes, pool.max_size - 1))
        self._lanes = [_Lane(self) for _ in range(lanes)]

    def open(self, job_id: uuid.UUID, *, attempt: int, last_seq: int, stop_run: StopRun) -> None:
        """Start writing a claimed job: ``attempt`` and ``last_seq`` as the claim returned them.

        An earlier attempt of the job may still be open here: this process claimed
        the job again because that run's heartbeat went stale (a database outage
        can do that), and the run has not noticed yet. It is fenced now. Otherwise
        its events would go into this attempt's log, because runs emit by job id."""
        earlier = self._logs.get(job_id)
        if earlier is not None:
            self._fence(earlier, _Written(result=AppendResult(False)), "fenced")
        job = _JobLog(job_id, attempt, last_seq, stop_run)
        # By the id, not round-robin: stable across close/open (see the module docstring).
        job.lane = self._lanes[job_id.int % len(self._lanes)]
        job.lane.jobs[job_id] = job
        self._logs[job_id] = job

    def close(self, job_id: uuid.UUID, *, attempt: int) -> None:
        """Forget a job's ``attempt`` (finished, released or fenced); whatever it still
        buffers is dropped. A later attempt opened since (see ``open``) stays."""
        job = self._logs.get(job_id)
        if job is None or job.attempt != attempt:
            return
        del self._logs[job_id]
        assert job.lane is not None
        job.lane.jobs.pop(job_id, None)

    async def emit(self, job_id: uuid.UUID, payload: Payload) -> None:
        """Buffer one non-terminal payload. Returns at once unless the job's buffer is full."""
        job = self._logs[job_id]
        if job.fenced:
            return  # its run is being stopped; nothing more of it may be written
        if job.final is not None:
            raise RuntimeError(f"job {job_id}: event after the terminal event")
        job.buffer.append(payload)
        self._kick(job)
        if len(job.buffer) >= self._max_buffered:
            await self._durable(job)

    async def finish(
        self, job_id: uuid.UUID, payload: Payload, *, status: Status, error: str | None = None
    ) -> AppendResult:
        """Write the terminal payload, with everything buffered before it, and move the
        job to ``status`` in the same transaction. Returns once durable; ``applied`` is
        False when the job was no longer this worker's."""
        job = self._logs[job_id]
        if job.fenced:
            return AppendResult(False)
        job.buffer.append(payload)
        job.final = (status, error)
        self._kick(job)
        return await self._durable(job)

    async def drain(self, job_id: uuid.UUID) -> AppendResult:
        """Wait until everything the job buffered so far is durable."""
        return await self._durable(self._logs[job_id])

    async def _durable(self, job: _JobLog) -> AppendResult:
        # shield: a waiter that is cancelled (its run stopped) must not cancel the
        # future that the flush resolves and other waiters share.
        if job.buffer:
            if job.next_write is None:
                job.next_write = asyncio.get_running_loop().create_future()
            written = await asyncio.shield(job.next_write)
        elif job.in_flight is not None:
            written = await asyncio.shield(job.in_flight)
        else:
            return AppendResult(not job.fenced, job.last_seq)
        if written.error is not None:
            raise WriterError(f"job {job.job_id}: events not written: {written.error}") from written.error
        assert written.result is not None
        return written.result

    def _kick(self, job: _JobLog) -> None:
        assert job.lane is not None
        job.lane.kick()

    def _take(self, job: _JobLog) -> AppendBatch:
        payloads, job.buffer = merge_text_deltas(job.buffer), []
        # Nothing is buffered after the terminal payload: the batch that carries it is the last.
        status, error = job.final or (None, None)
        job.finished = job.final is not None
        job.in_flight = job.next_write or asyncio.get_running_loop().create_future()
        job.next_write = None
        return AppendBatch(
            job.job_id,
            payloads,
            attempt=job.attempt,
            expected_last_seq=job.last_seq,
            new_status=status,
            error=error,
        )

    async def _commit(self, batches: list[AppendBatch]) -> list[AppendResult] | BaseException:
        # A connection lost during the commit leaves it unknown whether the commit
        # happened. If it did, the retry is refused by ``expected_last_seq``: each
        # refused batch is then looked up in the log, and one found there counts
        # as written (not fenced: the run goes on, nothing is written twice).
        maybe_committed = False
        for delay in (*self._retry_delays_s, None):
            try:
                results = await append_many(self._pool, batches)
                if maybe_committed:
                    results = [
                        result if result.applied else (await committed_earlier(self._pool, batch) or result)
                        for batch, result in zip(batches, results, strict=True)
                    ]
                return results
            except DatabaseUnavailable as exc:
                maybe_committed = True
                if delay is None:
                    return exc
                log.warning("event flush of %d job(s) failed (%s); retrying in %.2fs", len(batches), exc, delay)
                await asyncio.sleep(delay)
            except Exception as exc:
                # Not a connection problem: the same statement would fail the same way again.
                # The jobs of this flush fail (their runs stop); the writer goes on.
                log.exception("event flush of %d job(s) failed", len(batches))
                return exc
        raise AssertionError("unreachable: the last delay is None")

    def _settle(self, job: _JobLog, result: AppendResult) -> None:
        future, job.in_flight = job.in_flight, None
        assert future is not None
        written = _Written(result=result)
        future.set_result(written)
        if not result.applied:
            # Taken over (another attempt) or moved on by someone else.
            self._fence(job, written, "fenced")
            return
        # An applied append always answers the job's new last_seq.
        assert result.last_seq is not None
        job.last_seq = result.last_seq
        if result.cancel_requested and not job.finished:
            job.stop_run("cancelled")

    def _fail(self, job: _JobLog, error: BaseException) -> None:
        future, job.in_flight = job.in_flight, None
        assert future is not None
        written = _Written(error=error)
        future.set_result(written)
        self._fence(job, written, "lost")

    def _fence(self, job: _JobLog, written: _Written, reason: str) -> None:
        """Write nothing more for this job; whoever waits on its buffered events learns why."""
        job.fenced = True
        job.buffer.clear()
        if job.next_write is not None:
            job.next_write.set_result(written)
            job.next_write = None
        job.stop_run(reason)


def merge_text_deltas(payloads: list[Payload]) -> list[Payload]:
    """Consecutive ``text_delta``s become one (allowed within one flush: a reader sees the same text): fewer rows, same text."""
    merged: list[Payload] = []
    for payload in payloads:
        if payload["type"] == "text_delta" and merged and merged[-1]["type"] == "text_delta":
            merged[-1] = {"type": "text_delta", "delta": merged[-1]["delta"] + payload["delta"]}
        else:
            merged.append(payload)
    return merged
