"""One attempt of one job: claim it, run its agent, write the events, end the job.

    claim ──▶ [retry event] ──▶ agent payloads ... ──▶ terminal event + final status
                                      │
                                      ├─ transient model error ──▶ release (pending) → Celery retries
                                      ├─ worker shutting down ──▶ release (pending) → dispatched at once
                                      ├─ cancel requested ──▶ done/cancelled
                                      ├─ time limit ──▶ error "run exceeded time limit"
                                      └─ fenced (taken over) ──▶ stop, write nothing more
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agno.agent import Agent
from agno.models.base import Model

from runstream.db.conversation import agno_messages
from runstream.db.jobs import SHUTDOWN_ERROR, TERMINAL_STATUSES, Claim, after_jobs_ended, claim_job, release_job
from runstream.db.sessions import turns_before
from runstream.logs import job_fields
from runstream.settings import Settings
from runstream.tasks.agent_events import (
    CANCELLED,
    Payload,
    error_payload,
    final_status,
    is_terminal,
    run_payloads,
)
from runstream.tasks.event_writer import EventWriter, WriterError
from runstream.tasks.model_errors import PermanentModelError, is_transient
from runstream.tasks.models import build_model
from runstream.tasks.supervisor import RunHandle
from runstream.tasks.tools import TOOLS

if TYPE_CHECKING:
    from runstream.tasks.runtime import Runtime

log = logging.getLogger("runstream.worker")

TIME_LIMIT_MESSAGE = "run exceeded time limit"
# The terminal event for a run the supervisor stopped, by stop reason.
STOPPED: dict[str, Payload] = {"cancelled": CANCELLED, "timeout": error_payload(TIME_LIMIT_MESSAGE)}


@dataclass(frozen=True)
class RunOutcome:
    """How an attempt ended: a final status (completed, failed, cancelled), or
    released (handed back: retry in ``countdown`` seconds), skipped (not ours to
    run), declined (not claimed: the worker is going down), fenced (taken over)
    or lost (its events could not be written)."""

    status: str
    attempt: int = 0
    countdown: float = 0.0

    @property
    def wants_retry(self) -> bool:
        return self.status == "released"


def build_agent(
    job: dict[str, Any], settings: Settings, history: list[dict[str, Any]] | None = None
) -> tuple[Agent, Model]:
    """The agent for one attempt of ``job``, with the earlier turns of its session
    (Agno messages) as context. Raises PermanentModelError for a model it cannot build."""
    model = build_model(
        job["model"], attempt=job["attempt"], metadata=job["metadata"], offline_delay_ms=settings.offline_delay_ms
    )
    # telemetry=False: Agno would otherwise report every run to its own API.
    # additional_input goes between the system message and this run's message:
    # the place of history (rebuilt from the event log, see db.conversation).
    return Agent(model=model, tools=list(TOOLS), telemetry=False, additional_input=list(history) if history else None), model


async def session_context(runtime: Runtime, job: dict[str, Any]) -> list[dict[str, Any]]:
    turns = await turns_before(runtime.pool, job, runtime.settings.history_runs)
    return [message for turn in turns for message in agno_messages(turn, for_model=True)]


def retry_countdown(attempt: int, settings: Settings) -> float:
    """Exponential backoff with jitter before the attempt after ``attempt``: about
    base, 2·base, 4·base … capped, each scaled by a random factor in [0.5, 1) so
    jobs that failed together do not all come back together."""
    ceiling = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)


def retry_payload(claim: Claim) -> Payload:
    reason = "worker lost" if claim.previous_status == "running" else claim.previous_error or "dispatched again"
    return {"type": "retry", "attempt": claim.attempt, "reason": reason}


async def run_job(runtime: Runtime, job_id: uuid.UUID, *, worker: str) -> RunOutcome:
    """Run one attempt of the job, if it is ours to run."""
    settings = runtime.settings
    if runtime.supervisor.shutting_down:
        # Whatever reaches a worker going down is handed back untouched: a claim
        # here would start an attempt only to hand it back at once.
        log.info("job %s: declined (worker shutting down)", job_id)
        return RunOutcome("declined")
    claim = await claim_job(
        runtime.pool, job_id, worker=worker, stale_after_s=settings.stale_after_s, max_attempts=settings.max_attempts
    )
    if claim is None:
        log.info("job %s: skipped (finished, cancelled, running elsewhere, or out of attempts)", job_id)
        return RunOutcome("skipped")
    log.info(
        "job %s: running (attempt %d, worker %s)", job_id, claim.attempt, worker,
        extra=job_fields(job_id, "running", attempt=claim.attempt, worker=worker),
    )
    handle = runtime.supervisor.register(claim.id, claim.attempt)
    runtime.writer.open(claim.id, attempt=claim.attempt, last_seq=claim.job["last_seq"], stop_run=handle.stop)
    try:
        outcome = await _run_attempt(runtime, claim, handle)
    except WriterError as exc:
        log.error("job %s: %s", job_id, exc)
        outcome = RunOutcome("lost", claim.attempt)
    finally:
        runtime.supervisor.unregister(handle)
        runtime.writer.close(claim.id, attempt=claim.attempt)
    if outcome.status in TERMINAL_STATUSES and (claim.job["session_id"] or claim.job["webhook_url"]):
        # The next run of the session (promoted by the job's end), the webhook.
        await runtime.reaper.send_followups(await after_jobs_ended(runtime.pool, [claim.id]))
    log.info(
        "job %s: %s (attempt %d)", job_id, outcome.status, claim.attempt,
        extra=job_fields(job_id, outcome.status, attempt=claim.attempt, worker=worker),
    )
    return outcome


async def _run_attempt(runtime: Runtime, claim: Claim, handle: RunHandle) -> RunOutcome:
    writer = runtime.writer
    if claim.attempt > 1:
        await writer.emit(claim.id, retry_payload(claim))
    history = await session_context(runtime, claim.job)
    try:
        agent, model = build_agent(claim.job, runtime.settings, history)
    except PermanentModelError as exc:
        return await _end(writer, claim, error_payload(str(exc)))

    runner = asyncio.get_running_loop().create_task(_stream(agent, claim, writer))
    handle.attach(runner)
    terminal: Payload | None
    try:
        terminal = await runner
    except asyncio.CancelledError:
        if handle.stop_reason is None:
            raise  # this coroutine itself was cancelled (the worker is going down)
        terminal = None
    handle.settle()

    if terminal is None:
        assert handle.stop_reason is not None
        if handle.stop_reason == "shutdown":
            return await _release(runtime, claim, SHUTDOWN_ERROR, countdown=0.0)
        if handle.stop_reason not in STOPPED:
            return RunOutcome(handle.stop_reason, claim.attempt)  # fenced or lost: not ours to end
        return await _end(writer, claim, STOPPED[handle.stop_reason])

    failure = getattr(model, "failure", None)
    if terminal["type"] == "error" and failure is not None and is_transient(failure):
        if claim.attempt < runtime.settings.max_attempts:
            countdown = retry_countdown(claim.attempt, runtime.settings)
            return await _release(runtime, claim, terminal["message"], countdown=countdown)
        log.info("job %s: transient failure on the last attempt (%d): %s", claim.id, claim.attempt, failure)
    return await _end(writer, claim, terminal)


async def _stream(agent: Agent, claim: Claim, writer: EventWriter) -> Payload:
    """Write the run's payloads as they come; return the terminal one (not yet written)."""
    async for payload in run_payloads(agent, claim.job["message"]):
        if is_terminal(payload):
            return payload
        await writer.emit(claim.id, payload)
    raise AssertionError("run_payloads ends with a terminal payload")


async def _end(writer: EventWriter, claim: Claim, terminal: Payload) -> RunOutcome:
    status = final_status(terminal)
    error = terminal["message"] if terminal["type"] == "error" else None
    result = await writer.finish(claim.id, terminal, status=status, error=error)
    return RunOutcome(status if result.applied else "fenced", claim.attempt)


async def _release(runtime: Runtime, claim: Claim, message: str, *, countdown: float) -> RunOutcome:
    """Hand the job back for another attempt in ``countdown`` seconds, keeping what
    this one wrote (the next attempt's ``retry`` event tells readers to discard it)."""
    await runtime.writer.drain(claim.id)
    released = await release_job(
        runtime.pool, claim.id, attempt=claim.attempt, error=message, delay_s=countdown
    )
    return RunOutcome("released" if released else "fenced", claim.attempt, countdown)
