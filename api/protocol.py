"""The HTTP/1.1 protocol the API serves with: uvicorn's httptools protocol, with
a bound on each request head, enforced before any of it reaches the app.

Neither httptools nor uvicorn bounds a request head: the parser buffers a header
value until its line ends, growing it one received chunk at a time, so one client
sending a 64 MB header made the process hold (and copy, again and again) all of
it before any credential was looked at. Here the parser is fed at most
``max_header_bytes`` of a head; a head that has not ended by then is refused.

- a request line's target (path and query) over ``max_url_bytes``: 414
- a head (request line and headers) over ``max_header_bytes``: 431
- more than ``max_headers`` header fields: 431

A refusal is a JSON error, ``Connection: close``, and the connection closes: the
rest of what the client sends is never read. CORS headers cannot be added at this
layer, so a browser page sees a network error instead of the body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("runstream.api")


@dataclass(frozen=True)
class HeadLimits:
    max_url_bytes: int
    max_header_bytes: int
    max_headers: int


@dataclass(frozen=True)
class HeadRefusal:
    status: int
    code: str
    message: str


class HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing a head that is refused."""


def refusal_bytes(refusal: HeadRefusal, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = json.dumps({"error": {"code": refusal.code, "message": refusal.message}}).encode()
    head = [STATUS_LINE[refusal.status]]
    head.extend(name + b": " + value + b"\r\n" for name, value in default_headers)
    head.append(b"content-type: application/json\r\n")
    head.append(b"content-length: %d\r\n" % len(body))
    head.append(b"connection: close\r\n\r\n")
    return b"".join(head) + body


class HeadReading:
    """Where a connection is in reading its current request head."""

    __slots__ = ("limits", "received", "fields", "refusal")

    def __init__(self, limits: HeadLimits):
        self.limits = limits
        # Bytes of the current head received so far; None between a head's end
        # and the end of its request (body bytes are not counted here).
        self.received: int | None = 0
        self.fields = 0
        self.refusal: HeadRefusal | None = None


class BoundedHeadProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HeadLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # One attribute, not four: uvicorn's protocol sets 28, and CPython shares
        # the keys of instance dicts (each instance then stores only its values) up
        # to 29 attributes. Past that every connection has a dict table of its own:
        # 1.3 KB more per open connection, per open event stream.
        self.head = HeadReading(limits)

    @property
    def in_head(self) -> bool:
        return self.head.received is not None

    def data_received(self, data: bytes) -> None:
        if self.head.received is None:
            super().data_received(data)
            return
        room = self.head.limits.max_header_bytes - self.head.received
        if len(data) <= room:
            self.head.received += len(data)
            super().data_received(data)
            return
        # Feed only what a head may take: it must end within it.
        super().data_received(data[:room])
        if self.transport.is_closing():
            return
        # Still in the head, unless what was fed completed it.
        if self.in_head:
            limit = self.head.limits.max_header_bytes
            self.refuse(431, "headers_too_large", f"the request head is over {limit} bytes, the most allowed")
            return
        super().data_received(data[room:])

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head.fields = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.head.limits.max_url_bytes:
            limit = self.head.limits.max_url_bytes
            self.stop(414, "uri_too_long", f"the request target is over {limit} bytes, the most allowed")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.fields += 1
        if self.head.fields > self.head.limits.max_headers:
            limit = self.head.limits.max_headers
            self.stop(431, "too_many_headers", f"the request has over {limit} header fields, the most allowed")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head.received = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The next bytes on this connection begin the next request's head.
        self.head.received = 0
        super().on_message_complete()

    def stop(self, status: int, code: str, message: str) -> None:
        # uvicorn answers a parser error with its plain-text 400; send_400_response
        # below sends this refusal instead.
        self.head.refusal = HeadRefusal(status, code, message)
        raise HeadRefused(message)

    def send_400_response(self, msg: str) -> None:
        if self.head.refusal is None:
            super().send_400_response(msg)
        else:
            self.refuse(self.head.refusal.status, self.head.refusal.code, self.head.refusal.message)

    def refuse(self, status: int, code: str, message: str) -> None:
        log.warning("request head refused with %d: %s", status, message)
        self.transport.write(refusal_bytes(HeadRefusal(status, code, message), self.server_state.default_headers))
        self.transport.close()


def bounded_head_protocol(limits: HeadLimits) -> Any:
    """The protocol class for ``uvicorn.Config(http=...)``, with these limits."""
    return partial(BoundedHeadProtocol, limits=limits)
