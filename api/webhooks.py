"""Webhooks on the API side: the destination check at job creation, and
``GET /api/jobs/{id}/webhooks``, a job's deliveries with every attempt.

The sending is the worker's (tasks/webhooks.py).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from runstream.api import params
from runstream.api.errors import ApiError, not_found
from runstream.api.payloads import NewJob
from runstream.api.tenancy import resolve_tenant
from runstream.db import jobs, webhooks
from runstream.destinations import DestinationRefused, check_destination
from runstream.settings import Settings


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
        raise ApiError(422, "webhook_unavailable", "webhook: webhooks are not configured for this tenant (no signing secret)")
    return new.webhook.url


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "webhook_id": row["webhook_id"],
        "url": row["url"],
        "job_status": row["job_status"],
        "status": row["status"],
        "attempts": row["attempt_log"],
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }


async def job_webhooks(request: Request) -> JSONResponse:
    """The job's webhook deliveries, each with every attempt."""
    pool = request.app.state.pool
    job = await jobs.get_job(pool, params.job_id(request), resolve_tenant(request))
    if job is None:
        raise not_found()
    deliveries = await webhooks.job_deliveries(pool, job["id"])
    return JSONResponse(
        {
            "job_id": str(job["id"]),
            "webhook": {"url": job["webhook_url"]} if job["webhook_url"] else None,
            "deliveries": [_delivery(row) for row in deliveries],
        }
    )
