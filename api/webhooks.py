"""Webhooks on the API side: the destination check at job creation, and
``GET /api/jobs/{id}/webhooks``, a job's deliveries with every attempt.

The sending is the worker's (tasks/webhooks.py).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from runstream.api import params
from runstream.api.errors import ApiError, not_found
from runstream.api.payloads import Job, NewJob, WebhookDeliveries, WebhookDelivery
from runstream.api.tenancy import resolve_tenant
from runstream.core.destinations import DestinationRefused, check_destination
from runstream.core.settings import Settings
from runstream.db import jobs, webhooks


async def webhook_url(new: NewJob, tenant: str, settings: Settings) -> str | None:
    """The URL the new job's states go to: its own (checked here: a 422 for one
    that may not be sent to), else the tenant's default, else none."""
    if new.webhook is None:
        return settings.webhook_url_map.get(tenant)
    try:
        await check_destination(
            new.webhook.url, allow_private=settings.webhook_allow_private, resolve_timeout_s=settings.webhook_timeout_s
        )
    except DestinationRefused as exc:
        raise ApiError(422, "webhook_refused", f"webhook.url: {exc}") from None
    if settings.webhook_secret(tenant) is None:
        raise ApiError(
            422, "webhook_unavailable", "webhook: webhooks are not configured for this tenant (no signing secret)"
        )
    return new.webhook.url


async def job_webhooks(request: Request) -> Response:
    """The job's webhook deliveries, each with every attempt."""
    pool = request.app.state.pool
    job = await jobs.get_job(pool, params.job_id(request), resolve_tenant(request))
    if job is None:
        raise not_found()
    deliveries = await webhooks.job_deliveries(pool, job.id)
    return WebhookDeliveries(
        job_id=job.id,
        webhook=Job.model_validate(job).webhook,
        deliveries=[WebhookDelivery.model_validate(row) for row in deliveries],
    ).response()
