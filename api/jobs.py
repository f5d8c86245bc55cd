"""The job routes: create, status, cancel, list."""

from __future__ import annotations

import logging

from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response

from runstream.api import params
from runstream.api.auth import accepts_stream_token
from runstream.api.cursor import encode_cursor
from runstream.api.errors import ApiError, not_found
from runstream.api.limits import creation_limits, job_limit_error
from runstream.api.payloads import ActiveJob, CancelResult, Job, JobList, JobWithStream, parse_new_job
from runstream.api.tenancy import resolve_principal, resolve_tenant
from runstream.api.urls import public_base_url
from runstream.api.webhooks import webhook_url
from runstream.core.logs import job_fields
from runstream.db import jobs
from runstream.db.status import Status

log = logging.getLogger("runstream.api")


async def create_job(request: Request, default_session_id: str | None = None) -> Response:
    state = request.app.state
    settings = state.settings
    new = parse_new_job(await request.body(), settings.max_message_chars, settings.agent_paths)
    principal = resolve_principal(request)
    tenant = principal.tenant
    if_busy = new.if_busy or state.settings.session_if_busy
    try:
        job = await jobs.create_job(
            state.pool,
            tenant=tenant,
            user_id=principal.user_id,
            message=new.message,
            model=settings.model,
            # Stored resolved, so the job list and analytics name the agent that ran.
            agent=new.agent or settings.default_agent_name,
            session_id=new.session_id or default_session_id,
            metadata=new.metadata,
            limits=creation_limits(settings),
            if_busy=if_busy,
            webhook_url=await webhook_url(new, tenant, settings),
        )
    except jobs.LimitExceeded as exc:
        raise job_limit_error(exc) from None
    except jobs.SessionBusy as exc:
        raise session_busy_error(request, exc.active) from None
    queued = job.queued_at is not None
    if queued and if_busy in ("interrupt", "rollback"):
        interrupted = await jobs.interrupt_active_run(state.pool, job, rollback=if_busy == "rollback")
        if interrupted is not None:
            # A pending run is cancelled at once: its end may have promoted this job.
            await state.dispatcher.send_followups(await jobs.after_jobs_ended(state.pool, [interrupted]))
            job = await jobs.get_job(state.pool, job.id, tenant) or job
    # The row is committed first, so a dispatch that fails loses nothing: the
    # job stays pending and the reaper sends it again. A queued job is not sent:
    # the end of the run before it is.
    dispatched = not queued and await state.dispatcher.dispatch(job.id)
    log.info(
        "job created",
        extra=job_fields(job.id, Status.PENDING, dispatched=dispatched, queued=queued, session_id=job.session_id),
    )
    links = state.signer.links(job.id, tenant, public_base_url(request))
    return JobWithStream.of(job, links).response(status_code=202)


def session_busy_error(request: Request, active: jobs.JobRow) -> ApiError:
    """409 for if_busy reject: the run that holds the session, with its URLs."""
    links = request.app.state.signer.links(active.id, active.tenant, public_base_url(request))
    return ApiError(
        409,
        "session_busy",
        f"session {active.session_id!r} has a run in progress (job {active.id}); nothing was created",
        details={"active_job": ActiveJob(job_id=active.id, status=active.status, **links).model_dump(mode="json")},
    )


async def get_job(request: Request) -> Response:
    tenant = resolve_tenant(request)
    job = await jobs.get_job(request.app.state.pool, params.job_id(request), tenant)
    if job is None:
        raise not_found()
    # A fresh stream token, for a client whose first one expired.
    links = request.app.state.signer.links(job.id, tenant, public_base_url(request))
    return JobWithStream.of(job, links).response()


@accepts_stream_token
async def cancel_job(request: Request) -> Response:
    job_id = params.job_id(request)
    pool = request.app.state.pool
    status = await jobs.cancel_job(pool, job_id, resolve_tenant(request))
    if status is None:
        raise not_found()
    if status == Status.CANCELLED:
        await request.app.state.dispatcher.send_followups(await jobs.after_jobs_ended(pool, [job_id]))
    # "cancelled" when a pending job was cancelled here; "running" when its worker was asked to stop.
    log.info("job cancel requested", extra=job_fields(job_id, status))
    return CancelResult(status="ok", job_status=status).response()


async def list_jobs(request: Request) -> Response:
    query = params.parse_query(params.JobListQuery, request)
    # One row more than the page tells whether another page follows.
    rows = await jobs.list_jobs(
        request.app.state.pool,
        tenant=resolve_tenant(request),
        limit=query.limit + 1,
        user_id=query.user_id,
        session_id=query.session_id,
        status=query.status or None,
        agent=query.agent,
        created_after=query.created_after or None,
        created_before=query.created_before or None,
        cursor=query.position,
    )
    page = rows[: query.limit]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > query.limit else None
    return JobList(jobs=[Job.model_validate(job) for job in page], next_cursor=next_cursor).response()


class JobCollection(HTTPEndpoint):
    """``/api/jobs``: one route for both methods, so a 405 names both in ``Allow``."""

    get = staticmethod(list_jobs)
    post = staticmethod(create_job)
