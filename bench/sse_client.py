"""A lean SSE client for thousands of concurrent streams in one process.

It reads a stream the way DeltaKit does (split the body on a blank line, JSON-parse
each ``data:`` line), on a raw asyncio connection with httptools doing the HTTP
parsing and de-chunking in C: a bench client must cost far less CPU than the
server it measures, and httpx costs more than the server per event.

Bench payloads carry their creation time: a ``text_delta`` whose text is one or
more wall-clock stamps (``"<time.time()> "``; group commit may merge several into
one event). The stream turns each stamp into a delivery latency at the moment the
event is parsed.
"""

from __future__ import annotations

import asyncio
import json
import time
from functools import lru_cache
from typing import Any

import httptools

from runstream.db.events import TERMINAL_TYPES

OPEN_TIMEOUT_S = 30.0


@lru_cache(maxsize=4096)
def parse_block(block: bytes) -> tuple[int | None, tuple[float, ...], bool] | None:
    """One SSE block as ``(seq, stamps, terminal)``; None for a comment or retry block.

    Cached: in a fan-out every subscriber receives the same bytes for an event, so
    each event is JSON-parsed once, not once per stream (the client must cost far
    less than the server it measures)."""
    seq, data = None, None
    for line in block.split(b"\n"):
        if line.startswith(b"id:"):
            seq = int(line[3:])
        elif line.startswith(b"data:"):
            data = line[5:]
    if data is None:
        return None
    payload: dict[str, Any] = json.loads(data)
    kind = payload["type"]
    stamps: tuple[float, ...] = ()
    if kind == "text_delta":
        try:
            stamps = tuple(float(stamp) for stamp in payload["delta"].split())
        except ValueError:
            pass  # a real run's text, not a bench stamp
    return seq, stamps, kind in TERMINAL_TYPES


class StreamError(Exception):
    pass


class SseStream(asyncio.Protocol):
    """One ``GET`` of an event stream and what arrived on it."""

    def __init__(self, host: str, port: int, path: str, *, stamped: bool):
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n").encode()
        self.stamped = stamped
        loop = asyncio.get_running_loop()
        # The status code, once the response headers are in.
        self.opened: asyncio.Future[int] = loop.create_future()
        # Resolved when the server ends the response (or the connection goes).
        self.closed: asyncio.Future[None] = loop.create_future()
        self.events = 0
        self.stamps = 0
        self.latencies: list[float] = []
        self.first_event_at: float | None = None
        self.in_order = True
        self.terminal = False
        self._last_seq: int | None = None
        self._tail = b""
        self._parser = httptools.HttpResponseParser(self)
        self._transport: Any = None

    # --- asyncio.Protocol --------------------------------------------------
    def connection_made(self, transport: Any) -> None:  # uvloop's transports are not asyncio.Transport
        self._transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(StreamError(f"bad HTTP response: {exc} ({exc.__context__!r})"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(StreamError(f"connection lost before the response: {exc}"))
        self._end(None)

    # --- httptools callbacks -----------------------------------------------
    def on_headers_complete(self) -> None:
        self.opened.set_result(self._parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        now = time.time()
        blocks = (self._tail + body).split(b"\n\n")
        self._tail = blocks.pop()
        for block in blocks:
            self._take(block, now)

    def on_message_complete(self) -> None:
        self.close()

    # --- the stream ----------------------------------------------------------
    def _take(self, block: bytes, now: float) -> None:
        event = parse_block(block)
        if event is None:
            return  # a comment (keep-alive) or a retry block
        seq, stamps, terminal = event
        self.events += 1
        if self.first_event_at is None:
            self.first_event_at = now
        if seq is not None:
            if self._last_seq is not None and seq != self._last_seq + 1:
                self.in_order = False
            self._last_seq = seq
        if self.stamped and stamps:
            self.latencies.extend([now - stamp for stamp in stamps])
            self.stamps += len(stamps)
        self.terminal = self.terminal or terminal

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._end(None)

    def _end(self, error: Exception | None) -> None:
        if self.closed.done():
            return
        if error is None:
            self.closed.set_result(None)
        else:
            self.closed.set_exception(error)


async def open_stream(host: str, port: int, path: str, *, stamped: bool = True) -> SseStream:
    """Connect and wait for the response headers; raises unless the answer is 200."""
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(lambda: SseStream(host, port, path, stamped=stamped), host, port)
    status = await asyncio.wait_for(stream.opened, OPEN_TIMEOUT_S)
    if status != 200:
        stream.close()
        raise StreamError(f"GET {path}: HTTP {status}")
    return stream


async def open_streams(
    host: str,
    port: int,
    paths: list[str],
    *,
    concurrency: int = 100,
    stamped: bool = True,
) -> list[SseStream]:
    """Open one stream per path, at most ``concurrency`` connects at a time (the
    server's listen backlog is finite)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(path: str) -> SseStream:
        async with gate:
            return await open_stream(host, port, path, stamped=stamped)

    return list(await asyncio.gather(*(one(path) for path in paths)))
