"""The Starlette application: the route table and the resources it lives on.

``create_app`` is the uvicorn factory (``runstream api``), and what a host
application mounts (``host.mount("/agents", runstream.create_app())``). The
lifespan opens one fixed-size psycopg pool and the event hub's LISTEN
connection, so the process holds ``api_db_pool_size + 1`` Postgres connections
however many streams are open. Starlette runs no lifespan of a mounted app: the
host enters ``lifespan(app)`` in its own.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from runstream.api import (
    agents,
    analytics,
    continuation,
    deltakit,
    events,
    history,
    jobs,
    operations,
    transitions,
    webhooks,
)
from runstream.api.dispatch import Dispatcher
from runstream.api.errors import EXCEPTION_HANDLERS
from runstream.api.hub import EventHub
from runstream.api.openapi import openapi_json
from runstream.api.security import load_stream_keys, secure
from runstream.core.settings import Settings, get_settings
from runstream.db.connector import open_pool

STATIC_DIR = Path(__file__).parent / "static"


async def index(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")


async def console(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / "console.html")


def routes() -> list[Route | Mount]:
    table: list[Route | Mount] = [
        Route("/healthz", operations.healthz, methods=["GET"]),
        Route("/readyz", operations.readyz, methods=["GET"]),
        Route("/metrics", operations.metrics, methods=["GET"]),
        Route("/api/openapi.json", openapi_json, methods=["GET"]),
        Route("/api/agents", agents.list_agents, methods=["GET"]),
        Route("/api/jobs", jobs.JobCollection),
        # Before /api/jobs/{job_id}, which would take "transitions" for a job id.
        Route("/api/jobs/transitions", transitions.stream_transitions, methods=["GET"]),
        Route("/api/jobs/{job_id}", jobs.get_job, methods=["GET"]),
        Route("/api/jobs/{job_id}/cancel", jobs.cancel_job, methods=["POST"]),
        Route("/api/jobs/{job_id}/continue", continuation.continue_job, methods=["POST"]),
        Route("/api/jobs/{job_id}/events", events.stream_events, methods=["GET"]),
        Route("/api/jobs/{job_id}/webhooks", webhooks.job_webhooks, methods=["GET"]),
        Route("/api/sessions/{session_id}/messages", history.session_messages, methods=["GET"]),
        Route("/api/sessions/{session_id}/clear", history.clear_session_route, methods=["POST"]),
        Route("/api/analytics/summary", analytics.analytics_summary, methods=["GET"]),
        Route("/api/analytics/series", analytics.analytics_series, methods=["GET"]),
        Route("/api/analytics/jobs", analytics.analytics_jobs, methods=["GET"]),
        Route("/api/analytics/jobs/{job_id}", analytics.analytics_job, methods=["GET"]),
        # The same routes at the URLs DeltaKit's recipe calls.
        *deltakit.routes(),
    ]
    # The chat page and the operator console, when they are there (they ship in api/static/).
    if (STATIC_DIR / "index.html").is_file():
        table.append(Route("/", index, methods=["GET"], include_in_schema=False))
    if (STATIC_DIR / "console.html").is_file():
        table.append(Route("/console", console, methods=["GET"], include_in_schema=False))
    if STATIC_DIR.is_dir():
        table.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
    return table


def create_app(settings: Settings | None = None) -> Starlette:
    """The API as an ASGI app; ``settings`` None: from the environment. Every URL it
    hands out is under the prefix it is served at (``root_path``: a mount, or
    ``--root-path``)."""
    settings = settings or get_settings()
    database_url = settings.database_url
    if not database_url:
        raise RuntimeError("DATABASE_URL is not set")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Named after the process, so each API process's connections can be told
        # apart in pg_stat_activity.
        name = f"runstream-api-{os.getpid()}"
        pool = await open_pool(
            database_url,
            settings.api_db_pool_size,
            name=name,
            timeout=settings.api_db_wait_s,
            prepared_statements=settings.prepared_statements,
        )
        hub = EventHub(settings, pool, application_name=f"{name}-listen")
        dispatcher = Dispatcher(settings)
        app.state.settings = settings
        app.state.pool = pool
        app.state.hub = hub
        app.state.dispatcher = dispatcher
        await load_stream_keys(app.state.signer, pool)
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()
            dispatcher.close()
            await pool.close()

    app = Starlette(routes=routes(), exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    # API keys, stream tokens, limits, CORS: docs/security.md.
    secure(app, settings)
    return app


def lifespan(app: Starlette) -> AbstractAsyncContextManager[Mapping[str, Any] | None]:
    """The resources ``app`` (from ``create_app``) lives on, opened on entry and
    closed on exit: what a host that mounts it enters in its own lifespan, since
    Starlette runs no lifespan of a mounted app."""
    return app.router.lifespan_context(app)
