"""DeltaKit's recipe URLs, served as an alias of the same routes.

DeltaKit's background-task recipe points its frontend at
``http://localhost:8000/api/chat-agno-background-task/`` and calls, relative to it:
``jobs`` (POST), ``jobs/{id}``, ``jobs/{id}/events``, ``jobs/{id}/cancel`` (POST,
with no custom headers: that is what DeltaKit's ``stop()`` sends), and in its full
example ``GET {API_URL}`` (the history, a bare list of Agno messages for
``fromAgnoAgents``) and ``POST {API_URL}clear``. So an app built from the recipe
switches to Runstream by changing nothing.

The recipe's frontend names no session, so jobs started here without a
``session_id`` join the recipe's one fixed session, per tenant.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runstream.api import events, jobs
from runstream.api.history import DELTAKIT_SESSION_ID, agno_history, clear
from runstream.api.payloads import AgnoHistory, ClearResult
from runstream.api.tenancy import resolve_tenant

PREFIX = "/api/chat-agno-background-task"


async def create_job(request: Request) -> Response:
    return await jobs.create_job(request, default_session_id=DELTAKIT_SESSION_ID)


async def history(request: Request) -> Response:
    messages = await agno_history(request.app.state.pool, resolve_tenant(request), DELTAKIT_SESSION_ID)
    return AgnoHistory(messages).response()


async def clear_history(request: Request) -> Response:
    cleared = await clear(request.app.state.pool, resolve_tenant(request), DELTAKIT_SESSION_ID)
    return ClearResult(status="ok", cleared_runs=cleared).response()


def routes() -> list[Route]:
    return [
        Route(f"{PREFIX}/", history, methods=["GET"]),
        Route(f"{PREFIX}/clear", clear_history, methods=["POST"]),
        Route(f"{PREFIX}/jobs", create_job, methods=["POST"]),
        Route(f"{PREFIX}/jobs/{{job_id}}", jobs.get_job, methods=["GET"]),
        Route(f"{PREFIX}/jobs/{{job_id}}/cancel", jobs.cancel_job, methods=["POST"]),
        Route(f"{PREFIX}/jobs/{{job_id}}/events", events.stream_events, methods=["GET"]),
    ]
