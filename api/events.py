"""``GET /api/jobs/{job_id}/events``: a job's events as SSE, replay then live."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from runstream.api import params
from runstream.api.auth import accepts_stream_token
from runstream.api.errors import ApiError, not_found
from runstream.api.hub import EventHub
from runstream.api.payloads import EventsPage, LoggedEvent
from runstream.api.sse import HEADERS, KEEPALIVE, MEDIA_TYPE
from runstream.api.tenancy import resolve_tenant
from runstream.db.errors import DatabaseUnavailable
from runstream.db.events import read_events
from runstream.db.jobs import JobRow, get_job
from runstream.db.status import TERMINAL_STATUSES

log = logging.getLogger(__name__)

# While the database is unreachable (a restart, a failover), a stream keeps its
# client with keep-alives and reads again every DB_RETRY_S, for as long as it
# takes: a clean end without the terminal event would read as "the run is
# finished" to DeltaKit's client, which never reconnects.
DB_RETRY_S = 0.5


class StreamCut(Exception):
    """The stream must end before its terminal event (the server's shutdown grace
    ran out): the response is left unterminated, so no client can take the cut
    for the end of the run."""


class EventStreamResponse(StreamingResponse):
    """An SSE response that a ``StreamCut`` ends *uncleanly*: the chunked body is
    never terminated and uvicorn closes the connection. ``fetch`` readers
    (DeltaKit) then see a network error rather than a finished run, and
    ``EventSource`` reconnects with Last-Event-ID. ``release`` is called however
    the response ends (its stream slot: ``StreamSlots.hold``)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]):
        super().__init__(content, media_type=MEDIA_TYPE, headers=HEADERS)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette runs a stream in an anyio task group beside a second task that
        # waits for the disconnect. Here the stream runs in the request's own task
        # and a bare task waits for the disconnect, then cancels it: the same ends,
        # a third less memory per open stream (bench/README.md, fan-out). All of it
        # in this one frame, which lives as long as the stream.
        streaming = asyncio.current_task()
        assert streaming is not None
        gone = False

        async def hang_up_on_disconnect() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            streaming.cancel()

        watcher = asyncio.create_task(hang_up_on_disconnect())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except StreamCut:
            pass
        except asyncio.CancelledError:
            if not gone:
                raise
            streaming.uncancel()  # the client left: the response is over, not the server
        finally:
            watcher.cancel()
            self.release()


class StreamEndpoint:
    """A route endpoint whose response stays open as long as its client (a stream),
    served as the route's own ASGI app. Starlette wraps a function endpoint in two
    more layers, an app that makes the Request and a second exception wrapper
    (ExceptionMiddleware's, outside the router, answers every error alike), and
    their frames would live as long as the stream (bench/README.md: memory per
    open stream)."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]):
        self.handler = handler
        functools.update_wrapper(self, handler)  # its name, docstring and marks (accepts_stream_token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


def wants_json(request: Request) -> bool:
    """``Accept: application/json`` (and not ``text/event-stream``) asks for a page, not a stream."""
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/event-stream" not in accept


async def job_read_after(request: Request, job_id: uuid.UUID, after: int, code: str, name: str) -> JobRow:
    """The tenant's job whose events are read after ``after``: 404 when there is no
    such job; 400 when ``after`` is beyond its newest event (ids are only ever sent
    once committed, so no client can have seen one)."""
    job = await get_job(request.app.state.pool, job_id, resolve_tenant(request))
    if job is None:
        raise not_found()
    if after > job.last_seq:
        raise ApiError(400, code, f"{name} is beyond the job's newest event")
    return job


@StreamEndpoint
@accepts_stream_token
async def stream_events(request: Request) -> Response:
    # Every documented parameter is checked, whichever answer is asked for.
    query = params.parse_query(params.EventsQuery, request)
    if wants_json(request):
        return await events_page(request, query)
    job_id = params.job_id(request)
    after = params.resume_point(request, query)
    state = request.app.state
    job = await job_read_after(request, job_id, after, "invalid_last_event_id", "last event id")
    if job.status in TERMINAL_STATUSES and after == job.last_seq:
        # The client already has the terminal event: nothing will ever follow.
        return Response(b"", media_type=MEDIA_TYPE, headers=HEADERS)
    body = event_stream(state.hub, job_id, after)
    # Counted against the stream limits until it ends (429 when none is free).
    return EventStreamResponse(body, release=state.streams.hold(resolve_tenant(request)))


async def event_stream(hub: EventHub, job_id: uuid.UUID, after: int) -> AsyncIterator[bytes]:
    """Frames after ``after`` until the terminal event. The subscription is freed
    however this ends: terminal event, error, the client gone (the response's
    watcher cancels the stream when it sees the disconnect), or the server's shutdown grace
    running out (``StreamCut``: an unclean end, see ``EventStreamResponse``)."""
    with hub.subscribe(job_id, after) as subscriber:
        while True:
            try:
                frames = await subscriber.next_batch()
            except DatabaseUnavailable as exc:
                # A failed read moved nothing: reading again resumes exactly.
                if hub.cutting:
                    raise StreamCut from None
                log.warning("stream of job %s waits for the database (%s)", job_id, exc)
                yield KEEPALIVE
                await asyncio.sleep(DB_RETRY_S)
                continue
            if not frames:
                if hub.cutting:
                    raise StreamCut
                yield KEEPALIVE
                continue
            # A live stream gets one frame per wake-up most of the time: its bytes go out as they are.
            yield frames[0].data if len(frames) == 1 else b"".join([frame.data for frame in frames])
            # The terminal event is the job's last (nothing appends after it), so only a batch's last.
            if frames[-1].terminal:
                return


async def events_page(request: Request, query: params.EventsQuery) -> Response:
    """A page of the log as JSON, for clients that poll and for exports::

        GET /api/jobs/{id}/events?after=-1&limit=1000   (Accept: application/json)
        {"job_id", "status", "events": [{"id": seq, "data": payload, "at": appended at}, ...],
         "next": <the after of the next page>, "up_to_date": bool, "done": bool}

    ``up_to_date``: nothing after ``next`` had committed when the page was read
    (poll again later); ``done``: the page ends with the job's terminal event, so
    nothing will ever follow.
    """
    job_id = params.job_id(request)
    after, limit = query.after, query.limit
    state = request.app.state
    job = await job_read_after(request, job_id, after, "invalid_after", "after")
    # One row more than the page tells whether more had committed.
    rows = await read_events(state.pool, job_id, after, limit + 1)
    page = rows[:limit]
    up_to_date = len(rows) <= limit
    next_after = page[-1].seq if page else after
    done = up_to_date and (
        (bool(page) and page[-1].terminal) or (not page and job.status in TERMINAL_STATUSES and after == job.last_seq)
    )
    return EventsPage(
        job_id=job_id,
        status=job.status,
        events=[LoggedEvent(id=row.seq, data=json.loads(row.data), at=row.created_at) for row in page],
        next=next_after,
        up_to_date=up_to_date,
        done=done,
    ).response(headers={"Vary": "Accept"})
