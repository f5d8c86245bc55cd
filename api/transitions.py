"""``GET /api/jobs/transitions``: the tenant's job status changes as SSE, replay then live.

Each frame is ``id: <seq>\\ndata: <one-line JSON>\\n\\n``: a job created
(``previous_status`` null), a new status, or a new attempt. Seqs come from one
counter shared by every tenant, so a tenant's ids increase but skip the other
tenants' ones; the log is gap-free and commits in order, so resuming after an
id (``Last-Event-ID``, else ``last_event_id``) misses nothing and repeats
nothing. With neither, the stream starts at the newest transition: live only.
The first block, ``id: <where it starts>\\n\\n`` without data, tells a client
that has seen no transition yet where to resume from.

The stream never ends by itself. Its wake-ups come from the hub's one LISTEN
connection; each stream reads its own rows through the API's pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from runstream.api import params
from runstream.api.errors import ApiError
from runstream.api.events import DB_RETRY_S, EventStreamResponse, StreamCut, StreamEndpoint
from runstream.api.hub import EventHub
from runstream.api.payloads import Transition
from runstream.api.sse import KEEPALIVE
from runstream.api.tenancy import resolve_tenant
from runstream.db.connector import Pool
from runstream.db.errors import DatabaseUnavailable
from runstream.db.transitions import last_transition_seq, read_transitions

log = logging.getLogger(__name__)


def transition_frame(row: dict[str, Any]) -> bytes:
    data = Transition.model_validate(row).model_dump_json()
    return f"id: {row['seq']}\ndata: {data}\n\n".encode()


@StreamEndpoint
async def stream_transitions(request: Request) -> Response:
    tenant = resolve_tenant(request)
    state = request.app.state
    given = params.given_resume_point(request, params.parse_query(params.TransitionsQuery, request))
    newest = await last_transition_seq(state.pool)
    if given is not None and given > newest:
        raise ApiError(400, "invalid_last_event_id", "last event id is beyond the newest transition")
    after = newest if given is None else given
    body = transition_stream(state.hub, state.pool, tenant, after)
    # Counted against the stream limits until it ends (429 when none is free).
    return EventStreamResponse(body, release=state.streams.hold(tenant))


async def transition_stream(hub: EventHub, pool: Pool, tenant: str, after: int) -> AsyncIterator[bytes]:
    """Frames of ``tenant``'s transitions after ``after``, for as long as the client
    stays; cut uncleanly (``StreamCut``) when the server's shutdown grace runs out."""
    yield f"id: {after}\n\n".encode()
    with hub.watch_transitions(tenant) as woken:
        while True:
            # Cleared before the read: a wake-up during it makes the wait below return at once.
            woken.clear()
            try:
                rows = await read_transitions(pool, tenant, after, hub.page_size)
            except DatabaseUnavailable as exc:
                # A failed read moved nothing: reading again resumes exactly.
                if hub.cutting:
                    raise StreamCut from None
                log.warning("transitions stream of a tenant waits for the database (%s)", exc)
                yield KEEPALIVE
                await asyncio.sleep(DB_RETRY_S)
                continue
            if rows:
                after = rows[-1]["seq"]
                yield b"".join(transition_frame(row) for row in rows)
                if len(rows) == hub.page_size:
                    continue
            if hub.cutting:
                raise StreamCut
            # A timer per stream (the hub's ticker serves the job streams): an
            # operator's console opens a few of these, not thousands.
            with suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), hub.keepalive_s)
            if not woken.is_set():
                yield KEEPALIVE
