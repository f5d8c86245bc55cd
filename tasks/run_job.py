"""One attempt of one job: claim it, build its agent (tasks.registry), run it,
write the events, end the job.

    claim ──▶ [retry event] ──▶ build ──▶ agent payloads ... ──▶ terminal event + final status
                                      │
                                      ├─ transient model error ──▶ release (pending) → Celery retries
                                      ├─ worker shutting down ──▶ release (pending) → dispatched at once
                                      ├─ cancel requested ──▶ done/cancelled
                                      ├─ a tool needs a person ──▶ input_required, paused (run kept on the row)
                                      ├─ time limit ──▶ error "run exceeded time limit"
                                      └─ fenced (taken over) ──▶ stop, write nothing more

A paused job that was answered (POST /api/jobs/{id}/continue) comes back as
pending with its answers: the attempt that claims it rebuilds the paused run
from the row and continues it instead of starting the agent afresh.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agno.exceptions import redact_secrets
from agno.models.message import Message
from agno.workflow import Workflow

from runstream.core.logs import job_fields
from runstream.core.settings import Settings
from runstream.db.connector import Pool
from runstream.db.conversation import agno_messages
from runstream.db.jobs import (
    SHUTDOWN_ERROR,
    Claim,
    JobRow,
    after_jobs_ended,
    cancel_job,
    claim_job,
    paused_run,
    release_job,
    save_paused_run,
    set_job_output,
)
from runstream.db.sessions import turns_before
from runstream.db.status import TERMINAL_STATUSES, Status
from runstream.tasks.agent_events import (
    CANCELLED,
    Payload,
    Runnable,
    error_payload,
    final_status,
    is_terminal,
    run_payloads,
)
from runstream.tasks.event_writer import EventWriter, WriterError
from runstream.tasks.model_errors import PermanentModelError, is_transient
from runstream.tasks.pauses import Pause, answer_run, restore_run
from runstream.tasks.registry import AgentBuildError, AgentContext, RegisteredAgent, models_of
from runstream.tasks.supervisor import RunHandle

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


def agent_context(job: JobRow, history: list[dict[str, Any]]) -> AgentContext:
    return AgentContext(
        job_id=job.id,
        attempt=job.attempt,
        tenant=job.tenant,
        # The authenticated principal's user, never one the request body names:
        # an agent with its own memory keys it by this id.
        user=job.user_id,
        session_id=job.session_id,
        message=job.message,
        metadata=MappingProxyType(dict(job.metadata or {})),
        model=job.model,
        history=tuple(Message.from_dict(dict(message)) for message in history),
    )


@dataclass(frozen=True)
class PreparedRun:
    """What one attempt runs, and how: the runnable, its input and ``arun`` options."""

    runnable: Runnable
    input: Any
    options: dict[str, Any]
    # A paused run, answered, to continue instead of starting one.
    resume: Any = None


async def prepare_run(
    job: JobRow, settings: Settings, registry: dict[str, RegisteredAgent], history: list[dict[str, Any]]
) -> PreparedRun:
    """The job's agent (its own, or the default), built for this attempt. Raises
    AgentBuildError or PermanentModelError when no attempt could run it."""
    name = job.agent or settings.default_agent_name
    entry = registry.get(name)
    if entry is None:
        raise AgentBuildError(f"agent {name!r} is not served by this worker (RUNSTREAM_AGENTS)")
    ctx = agent_context(job, history)
    runnable = await entry.build(ctx)
    # History goes before this run's message, unless the agent keeps its own
    # (Agno's ``db``: its session, under the same session id, is its history).
    # A workflow takes the message alone; its factory sees the history in ctx.
    run_input: Any = ctx.message
    if not isinstance(runnable, Workflow) and runnable.db is None and ctx.history:
        run_input = [*ctx.history, Message(role="user", content=ctx.message)]
    return PreparedRun(runnable, run_input, {"session_id": ctx.session_id, "user_id": ctx.user})


async def session_context(runtime: Runtime, job: JobRow) -> list[dict[str, Any]]:
    turns = await turns_before(runtime.pool, job, runtime.settings.history_runs)
    return [message for turn in turns for message in agno_messages(turn, for_model=True)]


def model_failure(runnable: Runnable) -> BaseException | None:
    """The exception that ended a model call of the run (see tasks.model_errors), if any."""
    failures = (getattr(model, "failure", None) for model in models_of(runnable))
    return next((failure for failure in failures if failure is not None), None)


def retry_countdown(attempt: int, settings: Settings) -> float:
    """Exponential backoff with jitter before the attempt after ``attempt``: about
    base, 2·base, 4·base … capped, each scaled by a random factor in [0.5, 1) so
    jobs that failed together do not all come back together."""
    ceiling = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)


def retry_payload(claim: Claim) -> Payload:
    reason = "worker lost" if claim.previous_status == Status.RUNNING else claim.previous_error or "dispatched again"
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
        "job %s: running (attempt %d, worker %s)",
        job_id,
        claim.attempt,
        worker,
        extra=job_fields(job_id, Status.RUNNING, attempt=claim.attempt, worker=worker),
    )
    handle = runtime.supervisor.register(claim.id, claim.attempt)
    runtime.writer.open(claim.id, attempt=claim.attempt, last_seq=claim.job.last_seq, stop_run=handle.stop)
    try:
        outcome = await _run_attempt(runtime, claim, handle)
    except WriterError as exc:
        log.error("job %s: %s", job_id, exc)
        outcome = RunOutcome("lost", claim.attempt)
    finally:
        runtime.supervisor.unregister(handle)
        runtime.writer.close(claim.id, attempt=claim.attempt)
    if (outcome.status in TERMINAL_STATUSES or outcome.status == Status.PAUSED) and (
        claim.job.session_id or claim.job.webhook_url
    ):
        # The next run of the session (promoted by the job's end), the webhook (a pause has one too).
        await runtime.reaper.send_followups(await after_jobs_ended(runtime.pool, [claim.id]))
    log.info(
        "job %s: %s (attempt %d)",
        job_id,
        outcome.status,
        claim.attempt,
        extra=job_fields(job_id, outcome.status, attempt=claim.attempt, worker=worker),
    )
    return outcome


async def _run_attempt(runtime: Runtime, claim: Claim, handle: RunHandle) -> RunOutcome:
    writer = runtime.writer
    # The first attempt of a run, or of a paused run's continuation, is no retry.
    if claim.attempt - claim.job.attempt_base > 1:
        await writer.emit(claim.id, retry_payload(claim))
    history = await session_context(runtime, claim.job)
    try:
        run = await prepare_run(claim.job, runtime.settings, runtime.registry, history)
        if claim.job.answers is not None:
            run = await _continuation(runtime, claim, run, claim.job.answers)
    except (AgentBuildError, PermanentModelError) as exc:
        log.warning("job %s: %s", claim.id, exc)
        return await _end(writer, claim, error_payload(redact_secrets(str(exc))))

    runner = asyncio.get_running_loop().create_task(_stream(run, claim, writer, runtime.pool))
    handle.attach(runner)
    terminal: Payload | Pause | None
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
            return await _release(runtime, claim, SHUTDOWN_ERROR, countdown=0.0, handback=True)
        if handle.stop_reason not in STOPPED:
            return RunOutcome(handle.stop_reason, claim.attempt)  # fenced or lost: not ours to end
        return await _end(writer, claim, STOPPED[handle.stop_reason])
    if isinstance(terminal, Pause):
        return await _pause(runtime, claim, terminal)

    failure = model_failure(run.runnable)
    if terminal["type"] == "error" and failure is not None and is_transient(failure):
        if claim.counted_attempts < runtime.settings.max_attempts:
            countdown = retry_countdown(claim.attempt, runtime.settings)
            return await _release(runtime, claim, terminal["message"], countdown=countdown)
        log.info("job %s: transient failure on the last attempt (%d): %s", claim.id, claim.attempt, failure)
    return await _end(writer, claim, terminal)


async def _continuation(runtime: Runtime, claim: Claim, run: PreparedRun, answers: list[dict[str, Any]]) -> PreparedRun:
    """The attempt continues the job's paused run with the person's answers."""
    stored = await paused_run(runtime.pool, claim.id)
    if stored is None:
        raise AgentBuildError("the paused run was not kept; it cannot be continued")
    resume = restore_run(run.runnable, stored)
    answer_run(resume, answers)
    return PreparedRun(run.runnable, None, run.options, resume)


async def _stream(run: PreparedRun, claim: Claim, writer: EventWriter, pool: Pool) -> Payload | Pause:
    """Write the run's payloads as they come; return the terminal one (not yet
    written), or the run's Pause."""
    async for payload in run_payloads(run.runnable, run.input, resume=run.resume, **run.options):
        if isinstance(payload, Pause) or is_terminal(payload):
            return payload
        await writer.emit(claim.id, payload)
        if payload["type"] == "output":
            # Kept on the job too, so a client reads the structured answer without the stream.
            await set_job_output(pool, claim.id, attempt=claim.attempt, output=payload["content"])
    raise AssertionError("run_payloads ends with a terminal payload")


async def _end(writer: EventWriter, claim: Claim, terminal: Payload) -> RunOutcome:
    status = final_status(terminal)
    error = terminal["message"] if terminal["type"] == "error" else None
    result = await writer.finish(claim.id, terminal, status=status, error=error)
    return RunOutcome(status if result.applied else "fenced", claim.attempt)


async def _pause(runtime: Runtime, claim: Claim, pause: Pause) -> RunOutcome:
    """Keep the paused run on the job row, then append ``input_required`` with
    everything buffered before it and move the job to paused in one transaction.
    The attempt ends here: the worker slot is free while a person decides."""
    kept = await save_paused_run(
        runtime.pool,
        claim.id,
        attempt=claim.attempt,
        paused_run=pause.run,
        requirements=pause.payload["requirements"],
    )
    if not kept:
        return RunOutcome("fenced", claim.attempt)
    result = await runtime.writer.finish(claim.id, pause.payload, status=Status.PAUSED)
    if not result.applied:
        return RunOutcome("fenced", claim.attempt)
    if result.cancel_requested:
        # Asked to stop while it ran: it ends now, as a paused job's cancel does.
        return RunOutcome(await cancel_job(runtime.pool, claim.id, claim.job.tenant) or "fenced", claim.attempt)
    return RunOutcome(Status.PAUSED, claim.attempt)


async def _release(
    runtime: Runtime, claim: Claim, message: str, *, countdown: float, handback: bool = False
) -> RunOutcome:
    """Hand the job back for another attempt in ``countdown`` seconds, keeping what
    this one wrote (the next attempt's ``retry`` event tells readers to discard it).
    ``handback``: the worker is shutting down, this attempt did not fail."""
    await runtime.writer.drain(claim.id)
    released = await release_job(
        runtime.pool, claim.id, attempt=claim.attempt, error=message, delay_s=countdown, handback=handback
    )
    return RunOutcome("released" if released else "fenced", claim.attempt, countdown)
