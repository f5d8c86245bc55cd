"""``GET /api/analytics/summary`` and ``GET /api/analytics/jobs/{job_id}``.

Times are seconds. ``since``/``until`` are ISO 8601 instants (no zone: UTC) that
bound the jobs' ``created_at`` as [since, until); either may be left out.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from runstream.api import params
from runstream.api.errors import not_found
from runstream.api.payloads import AnalyticsSummary, JobAnalytics
from runstream.api.tenancy import resolve_tenant
from runstream.db.analytics import Scope, job_metrics, summary


async def analytics_summary(request: Request) -> Response:
    query = params.parse_query(params.SummaryQuery, request)
    # An empty bound was read as None ("" is in the type only for the schema).
    since, until = query.since or None, query.until or None
    scope = Scope(tenant=resolve_tenant(request), since=since, until=until, session_id=query.session_id)
    totals = await summary(request.app.state.pool, scope)
    return AnalyticsSummary(since=scope.since, until=scope.until, session_id=scope.session_id, **totals).response()


async def analytics_job(request: Request) -> Response:
    row = await job_metrics(request.app.state.pool, params.job_id(request), resolve_tenant(request))
    if row is None:
        raise not_found()
    return JobAnalytics.model_validate(row).response()
