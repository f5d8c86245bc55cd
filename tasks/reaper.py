"""The reaper: the job row, not the broker, is the truth.

A message can be lost where no acknowledgement protects it: the API dies
between its commit and its publish, the broker is down or restarts without the
message, a worker dies holding it and the broker will not hand it out again for
a while (Redis: its visibility timeout). So every worker process runs this loop
on its event loop (tasks.runtime), every ``reaper_interval_s``:

1. jobs that get no more attempts are ended (``db.jobs.finish_stuck``): a job
   out of attempts whose last run died, or that was handed back on its last
   attempt, fails with an ``error`` event; a dead run whose cancel was
   requested gets its ``done``/cancelled. Event and status in one transaction.
2. jobs with attempts left that no message will bring (pending for
   ``pending_timeout_s`` past ``available_at``, or running with a heartbeat
   older than ``stale_after_s`` and no cancel request: those are step 1's)
   are dispatched again, by job id, like the API does. The claim then
   decides: a stale run becomes attempt + 1 with a ``retry`` event; a message
   that does arrive after all finds the job taken.
3. paused jobs (waiting for a person) are never taken over: no worker holds
   them and none should. One that nobody answered within ``pause_timeout_s``
   fails with the ``error`` event "pause timed out".

Beside those passes, a loop of its own (same interval, supervised the same
way) makes sure the event log has its partitions for this month and the next
ones (``db.partitions.ensure_partitions``): Runstream needs no cron.

Several workers run it at once safely: each statement picks its jobs with
``FOR UPDATE SKIP LOCKED`` and, in the same statement, marks them (the terminal
status, or ``available_at = now()``), so no two reapers act on one job, and a
dispatched job is not dispatched again before another threshold has passed. A
duplicate that slips through anyway (a reaper's message and the broker's own
redelivery) costs nothing: the claim lets one delivery run the job.

It also sends what ended jobs leave behind (``send_followups``: the next run of
their session, their webhook deliveries), for the jobs it ends and for the
worker's own runs, and re-sends webhook deliveries whose message was lost.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

from runstream.core.broker import TASK_NAME, WEBHOOK_TASK_NAME, Producer
from runstream.core.settings import Settings
from runstream.db.connector import Pool
from runstream.db.jobs import (
    Followups,
    ReapLimits,
    after_jobs_ended,
    finish_stuck,
    finish_timed_out_pauses,
    mark_stuck_for_dispatch,
)
from runstream.db.partitions import ensure_partitions
from runstream.db.status import Status
from runstream.db.webhooks import mark_overdue_for_dispatch
from runstream.tasks.side_tasks import keep_running

log = logging.getLogger("runstream.worker")


class Reaper:
    def __init__(self, pool: Pool, settings: Settings):
        self._pool = pool
        self._interval_s = settings.reaper_interval_s
        self._publish_timeout_s = settings.dispatch_timeout_s
        self._webhook_max_attempts = settings.webhook_max_attempts
        self.limits = ReapLimits(
            pending_timeout_s=settings.pending_timeout_s,
            stale_after_s=settings.stale_after_s,
            max_attempts=settings.max_attempts,
        )
        self._pause_timeout_s = settings.pause_timeout_s
        # A dispatch that fails is not retried on the spot: the job is marked,
        # so the next try comes a threshold later (the broker is likely down).
        self._producer = Producer("runstream-reaper", settings)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="runstream-reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._producer.close()

    async def _loop(self) -> None:
        # Two supervised loops: a failing partition pass never holds up the
        # stuck-job pass, nor the other way round.
        await asyncio.gather(
            keep_running("reaper", self.tick, self._interval_s),
            keep_running("reaper (partitions)", self.keep_partitions, self._interval_s),
        )

    async def keep_partitions(self) -> None:
        for partition in await ensure_partitions(self._pool, datetime.now(UTC)):
            log.info("reaper: created event log partition %s", partition.describe())

    async def tick(self) -> tuple[list[tuple[uuid.UUID, Status]], list[uuid.UUID]]:
        """One pass: (jobs ended, with their status), (jobs dispatched again)."""
        ended = await finish_stuck(self._pool, self.limits)
        for job_id, status in ended:
            log.warning("reaper: job %s %s: no attempt left for it", job_id, status)
        for job_id in await finish_timed_out_pauses(self._pool, self._pause_timeout_s, self.limits.limit):
            log.warning("reaper: job %s failed: nobody answered it within %.0fs", job_id, self._pause_timeout_s)
            ended.append((job_id, Status.FAILED))
        if ended:
            await self.send_followups(await after_jobs_ended(self._pool, [job_id for job_id, _ in ended]))
        stuck = await mark_stuck_for_dispatch(self._pool, self.limits)
        dispatched = await self._send_all(TASK_NAME, [str(job_id) for job_id in stuck])
        if dispatched:
            log.info("reaper: dispatched %d stuck job(s) again: %s", len(dispatched), ", ".join(dispatched))
        overdue = await mark_overdue_for_dispatch(
            self._pool,
            pending_timeout_s=self.limits.pending_timeout_s,
            max_attempts=self._webhook_max_attempts,
            limit=self.limits.limit,
        )
        resent = await self._send_all(WEBHOOK_TASK_NAME, overdue)
        if resent:
            log.info("reaper: re-sent %d overdue webhook delivery(ies): %s", len(resent), ", ".join(resent))
        return ended, [uuid.UUID(job_id) for job_id in dispatched]

    async def send_followups(self, followups: Followups) -> None:
        """Send what ended jobs left to do: their sessions' next runs, their
        webhook deliveries. What fails to send is found again once overdue."""
        await self._send_all(TASK_NAME, [str(job_id) for job_id in followups.runs])
        await self._send_all(WEBHOOK_TASK_NAME, followups.webhooks)

    async def _send_all(self, task_name: str, refs: list[str]) -> list[str]:
        sent = []
        for ref in refs:
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(self._producer.publish, task_name, ref), self._publish_timeout_s * 2
                )
            except Exception as exc:  # noqa: BLE001 - any broker failure means the same: try later
                log.warning(
                    "reaper: dispatch of %s %s failed (%r); next try in %.0fs",
                    task_name,
                    ref,
                    exc,
                    self.limits.pending_timeout_s,
                )
                break  # the rest are marked too, and come back a threshold later
            sent.append(ref)
        return sent

    async def send_later(self, task_name: str, ref: str, countdown: float) -> None:
        """Send a task due in ``countdown`` seconds; a failed send is left to the
        overdue sweep (the row says when it is due)."""
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self._producer.publish, task_name, ref, countdown), self._publish_timeout_s * 2
            )
        except Exception as exc:  # noqa: BLE001 - any broker failure means the same: try later
            log.warning("dispatch of %s %s failed (%r); the reaper sends it once overdue", task_name, ref, exc)
