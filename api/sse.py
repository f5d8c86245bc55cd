"""Server-Sent Events framing, byte for byte as DeltaKit's client and EventSource need it.

DeltaKit splits the body on ``"\\n\\n"`` and JSON-parses each ``data:`` line, and
EventSource fires ``onmessage`` only for events without an ``event:`` field. So:
``\\n`` line ends only, one ``id:`` and one ``data:`` line per event, no ``event:``.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from runstream.db.events import EventRow

KEEPALIVE = b": keepalive\n\n"

HEADERS = {
    "Cache-Control": "no-cache",
    # nginx would otherwise buffer the stream and deliver it in lumps.
    "X-Accel-Buffering": "no",
}
MEDIA_TYPE = "text/event-stream"


class Frame(NamedTuple):
    """One event as it goes on the wire. The hub encodes each row it reads once,
    and every stream it reaches sends these same bytes."""

    seq: int
    terminal: bool
    created_at: datetime | None
    data: bytes


def event_frames(rows: list[EventRow]) -> list[Frame]:
    # The payload is jsonb rendered by Postgres: one line, since JSON escapes
    # every newline and carriage return inside strings.
    return [
        Frame(row.seq, row.terminal, row.created_at, f"id: {row.seq}\ndata: {row.data}\n\n".encode()) for row in rows
    ]
