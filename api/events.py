"""``GET /api/jobs/{job_id}/events``: a job's events as SSE, replay then live."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api import params
from api.errors import ApiError, not_found
from api.hub import EventHub
from api.sse import HEADERS, KEEPALIVE, MEDIA_TYPE, event_frame
from api.tenancy import resolve_tenant
from db.jobs import TERMINAL_STATUSES, get_job


async def stream_events(request: Request) -> Response:
    job_id = params.job_id(request)
    after = params.resume_point(request)
    state = request.app.state
    job = await get_job(state.pool, job_id, resolve_tenant(request))
    if job is None:
        raise not_found()
    # Ids are only ever sent after they are committed, so a client cannot
    # have seen one beyond the job's newest.
    if after > job["last_seq"]:
        raise ApiError(400, "invalid_last_event_id", "last event id is beyond the job's newest event")
    if job["status"] in TERMINAL_STATUSES and after == job["last_seq"]:
        # The client already has the terminal event: nothing will ever follow.
        return Response(b"", media_type=MEDIA_TYPE, headers=HEADERS)
    body = event_stream(state.hub, job_id, after, state.settings.keepalive_s)
    return StreamingResponse(body, media_type=MEDIA_TYPE, headers=HEADERS)


async def event_stream(hub: EventHub, job_id: uuid.UUID, after: int, keepalive_s: float) -> AsyncIterator[bytes]:
    """Frames after ``after`` until the terminal event. The subscription is freed
    however this ends: terminal event, error, or the client gone (Starlette
    cancels the stream when it sees the disconnect)."""
    with hub.subscribe(job_id, after) as subscriber:
        while True:
            rows = await subscriber.next_batch(keepalive_s)
            if not rows:
                yield KEEPALIVE
                continue
            chunk = bytearray()
            for row in rows:
                chunk += event_frame(row)
                if row.terminal:
                    yield bytes(chunk)
                    return
            yield bytes(chunk)
