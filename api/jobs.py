"""The job routes: create, status, cancel, list."""

from __future__ import annotations

import logging

from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response

from runstream.api import params
from runstream.api.auth import accepts_stream_token
from runstream.api.cursor import encode_cursor
from runstream.api.errors import not_found
from runstream.api.limits import creation_limits, job_limit_error
from runstream.api.payloads import CancelResult, Job, JobList, JobWithStream, parse_new_job
from runstream.api.tenancy import resolve_tenant
from runstream.api.urls import public_base_url
from runstream.db import jobs
from runstream.logs import job_fields

log = logging.getLogger("runstream.api")


async def create_job(request: Request, default_session_id: str | None = None) -> Response:
    state = request.app.state
    new = parse_new_job(await request.body(), state.settings.max_message_chars)
    tenant = resolve_tenant(request)
    try:
        job = await jobs.create_job(
            state.pool,
            tenant=tenant,
            message=new.message,
            model=state.settings.model,
            session_id=new.session_id or default_session_id,
            metadata=new.metadata,
            limits=creation_limits(state.settings),
        )
    except jobs.LimitExceeded as exc:
        raise job_limit_error(exc) from None
    # The row is committed first, so a dispatch that fails loses nothing: the
    # job stays pending and the reaper sends it again.
    dispatched = await state.dispatcher.dispatch(job["id"])
    log.info("job created", extra=job_fields(job["id"], "pending", dispatched=dispatched, session_id=job["session_id"]))
    links = state.signer.links(job["id"], tenant, public_base_url(request))
    return JobWithStream.model_validate(job | links).response(status_code=202)


async def get_job(request: Request) -> Response:
    tenant = resolve_tenant(request)
    job = await jobs.get_job(request.app.state.pool, params.job_id(request), tenant)
    if job is None:
        raise not_found()
    # A fresh stream token, for a client whose first one expired.
    links = request.app.state.signer.links(job["id"], tenant, public_base_url(request))
    return JobWithStream.model_validate(job | links).response()


@accepts_stream_token
async def cancel_job(request: Request) -> Response:
    job_id = params.job_id(request)
    status = await jobs.cancel_job(request.app.state.pool, job_id, resolve_tenant(request))
    if status is None:
        raise not_found()
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
        session_id=query.session_id,
        status=query.status,
        cursor=query.position,
    )
    page = rows[: query.limit]
    next_cursor = encode_cursor(page[-1]) if len(rows) > query.limit else None
    return JobList(jobs=[Job.model_validate(job) for job in page], next_cursor=next_cursor).response()


class JobCollection(HTTPEndpoint):
    """``/api/jobs``: one route for both methods, so a 405 names both in ``Allow``."""

    get = staticmethod(list_jobs)
    post = staticmethod(create_job)
