"""``GET /api/analytics/summary``, ``/series``, ``/jobs`` and ``/jobs/{job_id}``.

Times are seconds. ``since``/``until`` are ISO 8601 instants (no zone: UTC) that
bound the jobs' ``created_at`` as [since, until); either may be left out, but
for ``/series``, which needs ``since``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from runstream.api import params
from runstream.api.errors import ApiError, not_found
from runstream.api.tenancy import resolve_tenant
from runstream.db.analytics import Scope, job_metrics, jobs_timings, series, summary

# A chart has a bar per interval: more than this many is a mistake, not a chart.
MAX_SERIES_INTERVALS = 1000
# As many ids as a page of the job list holds.
MAX_TIMING_IDS = params.MAX_LIMIT


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _scope(request: Request) -> Scope:
    return Scope(
        tenant=resolve_tenant(request),
        since=params.instant(request, "since"),
        until=params.instant(request, "until"),
        session_id=request.query_params.get("session_id") or None,
        agent=request.query_params.get("agent") or None,
    )


async def analytics_summary(request: Request) -> JSONResponse:
    scope = _scope(request)
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


async def analytics_series(request: Request) -> JSONResponse:
    """The scope's jobs per ``interval_s`` seconds of [since, until) (until: now)."""
    scope = _scope(request)
    if scope.since is None:
        raise ApiError(400, "missing_since", "since is required: the series starts there")
    until = scope.until or datetime.now(UTC)
    text = request.query_params.get("interval_s", "")
    if not (params.INTEGER.fullmatch(text) and int(text) >= 1):
        raise ApiError(400, "invalid_interval_s", "interval_s must be a whole number of seconds, 1 or more")
    interval_s = int(text)
    span_s = (until - scope.since).total_seconds()
    if span_s <= 0:
        raise ApiError(400, "invalid_until", "until must be after since")
    if span_s / interval_s > MAX_SERIES_INTERVALS:
        raise ApiError(
            400, "too_many_intervals", f"[since, until) holds more than {MAX_SERIES_INTERVALS} intervals of interval_s"
        )
    scope = Scope(scope.tenant, scope.since, until, scope.session_id, scope.agent)
    return JSONResponse(
        {
            "since": _time(scope.since),
            "until": _time(scope.until),
            "interval_s": interval_s,
            "session_id": scope.session_id,
            "agent": scope.agent,
            "intervals": await series(request.app.state.pool, scope, interval_s),
        }
    )


async def analytics_jobs(request: Request) -> JSONResponse:
    """Queue wait, time to first token and duration of up to MAX_TIMING_IDS jobs
    (``ids``: comma-separated job ids). Ids of no job of the tenant are left out."""
    texts = [t for t in request.query_params.get("ids", "").split(",") if t.strip()]
    if not 1 <= len(texts) <= MAX_TIMING_IDS:
        raise ApiError(400, "invalid_ids", f"ids must name 1 to {MAX_TIMING_IDS} job ids, comma-separated")
    try:
        job_ids = [uuid.UUID(t.strip()) for t in texts]
    except ValueError:
        raise ApiError(400, "invalid_ids", "ids must be job ids (UUIDs), comma-separated") from None
    rows = await jobs_timings(request.app.state.pool, job_ids, resolve_tenant(request))
    return JSONResponse(
        {
            "jobs": [
                {
                    "job_id": str(r["job_id"]),
                    "session_id": r["session_id"],
                    "agent": r["agent"],
                    "outcome": r["outcome"],
                    "attempts": r["attempts"],
                    "queue_wait_s": r["queue_wait_s"],
                    "ttft_s": r["ttft_s"],
                    "duration_s": r["duration_s"],
                }
                for r in rows
            ]
        }
    )
