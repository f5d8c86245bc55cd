"""Server-Sent Events framing, byte for byte as DESIGN.md binds it.

DeltaKit splits the body on ``"\\n\\n"`` and JSON-parses each ``data:`` line, and
EventSource fires ``onmessage`` only for events without an ``event:`` field. So:
``\\n`` line ends only, one ``id:`` and one ``data:`` line per event, no ``event:``.
"""

from __future__ import annotations

from db.events import EventRow

KEEPALIVE = b": keepalive\n\n"

HEADERS = {
    "Cache-Control": "no-cache",
    # nginx would otherwise buffer the stream and deliver it in lumps.
    "X-Accel-Buffering": "no",
}
MEDIA_TYPE = "text/event-stream"


def event_frame(row: EventRow) -> bytes:
    # The payload is jsonb rendered by Postgres: one line, since JSON escapes
    # every newline and carriage return inside strings.
    return f"id: {row.seq}\ndata: {row.data}\n\n".encode()
