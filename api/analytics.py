"""``GET /api/analytics/summary``, ``/series``, ``/jobs`` and ``/jobs/{job_id}``.

Times are seconds. ``since``/``until`` are RFC 3339 instants (no zone: UTC) that
bound the jobs' ``created_at`` as [since, until); either may be left out, but
for ``/series``, which needs ``since``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from runstream.api import params
from runstream.api.errors import ApiError, not_found
from runstream.api.payloads import AnalyticsSeries, AnalyticsSummary, JobAnalytics, JobsTimings
from runstream.api.tenancy import resolve_tenant
from runstream.db.analytics import Scope, job_metrics, jobs_timings, series, summary

# A chart has a bar per interval: more than this many is a mistake, not a chart.
MAX_SERIES_INTERVALS = 1000
# As many ids as a page of the job list holds.
MAX_TIMING_IDS = params.MAX_LIMIT


def _scope(request: Request, query: params.SummaryQuery) -> Scope:
    # An empty bound was read as None ("" is in the type only for the schema).
    return Scope(
        tenant=resolve_tenant(request),
        since=query.since or None,
        until=query.until or None,
        session_id=query.session_id,
        agent=query.agent,
    )


async def analytics_summary(request: Request) -> Response:
    scope = _scope(request, params.parse_query(params.SummaryQuery, request))
    totals = await summary(request.app.state.pool, scope)
    return AnalyticsSummary(
        since=scope.since, until=scope.until, session_id=scope.session_id, agent=scope.agent, **totals
    ).response()


async def analytics_job(request: Request) -> Response:
    row = await job_metrics(request.app.state.pool, params.job_id(request), resolve_tenant(request))
    if row is None:
        raise not_found()
    return JobAnalytics.model_validate(row).response()


async def analytics_series(request: Request) -> Response:
    """The scope's jobs per ``interval_s`` seconds of [since, until) (until: now)."""
    query = params.parse_query(params.SeriesQuery, request)
    scope = _scope(request, query)
    if scope.since is None:
        raise ApiError(400, "missing_since", "since is required: the series starts there")
    if query.interval_s is None:
        raise ApiError(400, "invalid_interval_s", "interval_s must be a whole number of seconds, 1 or more")
    until = scope.until or datetime.now(UTC)
    span_s = (until - scope.since).total_seconds()
    if span_s <= 0:
        raise ApiError(400, "invalid_until", "until must be after since")
    if span_s / query.interval_s > MAX_SERIES_INTERVALS:
        raise ApiError(
            400, "too_many_intervals", f"[since, until) holds more than {MAX_SERIES_INTERVALS} intervals of interval_s"
        )
    scope = Scope(scope.tenant, scope.since, until, scope.session_id, scope.agent)
    intervals = await series(request.app.state.pool, scope, query.interval_s)
    return AnalyticsSeries.model_validate(
        {
            "since": scope.since,
            "until": until,
            "interval_s": query.interval_s,
            "session_id": scope.session_id,
            "agent": scope.agent,
            "intervals": intervals,
        }
    ).response()


async def analytics_jobs(request: Request) -> Response:
    """Queue wait, time to first token and duration of up to MAX_TIMING_IDS jobs
    (``ids``: comma-separated job ids). Ids of no job of the tenant are left out."""
    query = params.parse_query(params.JobIdsQuery, request)
    if query.ids is None:
        raise ApiError(400, "invalid_ids", f"ids must name 1 to {MAX_TIMING_IDS} job ids, comma-separated")
    rows = await jobs_timings(request.app.state.pool, query.ids, resolve_tenant(request))
    return JobsTimings.model_validate({"jobs": rows}).response()
