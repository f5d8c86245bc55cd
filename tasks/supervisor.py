"""One loop per worker process that watches every run it holds.

Every ``cancel_poll_s`` it asks Postgres, in one query for all runs, which ones
have a cancel request (and every ``heartbeat_s`` that query is the heartbeat,
which also says which jobs are still this worker's). It stops a run by
cancelling the run's asyncio task, which works whatever the run awaits: a silent
model, a sleeping tool, the database. It also enforces the run time limit, and
when the worker shuts down it stops every run for hand-back (``hand_back_all``).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from runstream.db.connector import Pool
from runstream.db.jobs import cancel_requests, heartbeat
from runstream.tasks.side_tasks import keep_running


class RunHandle:
    """A run in progress, and the one way to stop it."""

    def __init__(self, job_id: uuid.UUID, attempt: int, deadline: float):
        self.job_id = job_id
        self.attempt = attempt
        self.deadline = deadline  # time.monotonic() after which the run has taken too long
        # Why the run was stopped: "cancelled", "timeout", "fenced", "lost" or
        # "shutdown" (hand the job back); None while it runs.
        self.stop_reason: str | None = None
        self._task: asyncio.Task | None = None
        self._settled = False

    def attach(self, task: asyncio.Task) -> None:
        """The task that runs the agent; stopping the run cancels it."""
        self._task = task
        if self.stop_reason is not None:
            task.cancel()

    def stop(self, reason: str) -> None:
        """Stop the run; the first reason wins, and a settled run is left alone."""
        if self._settled or self.stop_reason is not None:
            return
        self.stop_reason = reason
        if self._task is not None:
            self._task.cancel()

    def settle(self) -> None:
        """The run has chosen how it ends: later stop requests change nothing."""
        self._settled = True


class Supervisor:
    def __init__(self, pool: Pool, *, poll_s: float, heartbeat_s: float, run_timeout_s: float):
        self._pool = pool
        self._poll_s = poll_s
        self._heartbeat_s = heartbeat_s
        self._run_timeout_s = run_timeout_s
        self._runs: dict[uuid.UUID, RunHandle] = {}
        self._last_heartbeat = time.monotonic()
        self._task: asyncio.Task | None = None
        self._shutting_down = False

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def register(self, job_id: uuid.UUID, attempt: int) -> RunHandle:
        handle = RunHandle(job_id, attempt, time.monotonic() + self._run_timeout_s)
        self._runs[job_id] = handle
        if self._shutting_down:
            handle.stop("shutdown")  # claimed as the worker goes down: hand it back too
        return handle

    def hand_back_all(self) -> None:
        """The worker is going down: stop every run, now and to come, so each is handed
        back (pending, dispatched again at once) instead of waiting for its heartbeat
        to go stale. A run already writing its end is left to finish."""
        self._shutting_down = True
        for handle in list(self._runs.values()):
            handle.stop("shutdown")

    def unregister(self, handle: RunHandle) -> None:
        if self._runs.get(handle.job_id) is handle:
            del self._runs[handle.job_id]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="runstream-supervisor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        # A worker that stays cut off from the database stops heart-beating, and
        # its jobs go to another.
        await keep_running("supervisor", self.check, self._poll_s)

    async def check(self) -> None:
        """One tick: time limits, then cancel requests (or the heartbeat, when it is due)."""
        runs = list(self._runs.values())
        if not runs:
            return
        now = time.monotonic()
        for handle in runs:
            if now >= handle.deadline:
                handle.stop("timeout")
        if now - self._last_heartbeat >= self._heartbeat_s:
            self._last_heartbeat = now
            ours = await heartbeat(self._pool, {h.job_id: h.attempt for h in runs})
            for handle in runs:
                if handle.job_id not in ours:
                    handle.stop("fenced")
                elif ours[handle.job_id] is not None:
                    handle.stop("cancelled")
        else:
            for job_id in await cancel_requests(self._pool, [h.job_id for h in runs]):
                run = self._runs.get(job_id)
                if run is not None:
                    run.stop("cancelled")
