"""``GET /api/analytics/summary`` and ``GET /api/analytics/jobs/{job_id}``.

Times are seconds. ``since``/``until`` are ISO 8601 instants (no zone: UTC) that
bound the jobs' ``created_at`` as [since, until); either may be left out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from runstream.api import params
from runstream.api.errors import ApiError, not_found
from runstream.api.tenancy import resolve_tenant
from runstream.db.analytics import Scope, job_metrics, summary


def _instant(request: Request, name: str) -> datetime | None:
    text = request.query_params.get(name)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"invalid_{name}", f"{name} must be an ISO 8601 date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def analytics_summary(request: Request) -> JSONResponse:
    scope = Scope(
        tenant=resolve_tenant(request),
        since=_instant(request, "since"),
        until=_instant(request, "until"),
        session_id=request.query_params.get("session_id") or None,
        agent=request.query_params.get("agent") or None,
    )
    body: dict[str, Any] = {
        "since": _time(scope.since),
        "until": _time(scope.until),
        "session_id": scope.session_id,
        "agent": scope.agent,
    }
    body.update(await summary(request.app.state.pool, scope))
    return JSONResponse(body)


async def analytics_job(request: Request) -> JSONResponse:
    row = await job_metrics(request.app.state.pool, params.job_id(request), resolve_tenant(request))
    if row is None:
        raise not_found()
    return JSONResponse(
        {
            "job_id": str(row["job_id"]),
            "session_id": row["session_id"],
            "agent": row["agent"],
            "outcome": row["outcome"],
            "attempts": row["attempts"],
            "queue_wait_s": row["queue_wait_s"],
            "ttft_s": row["ttft_s"],
            "duration_s": row["duration_s"],
            "paused_s": row["paused_s"],
            "events": row["events"],
            "events_by_type": row["events_by_type"],
            "text_chars": row["text_chars"],
            "tool_calls": row["tool_calls"],
            "retries": row["retries"],
        }
    )
