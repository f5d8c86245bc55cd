"""Refuse, before any handler runs, requests no route can take.

- A NUL in the URL: Postgres text cannot hold one, so a path or query value
  carrying it would fail deep inside a query (a 500) on any route that stores or
  looks it up. Refusing it here covers every route, present and future.
- A body over ``max_body_bytes``: a declared ``Content-Length`` over it is
  answered at once, without reading; a body sent without one (chunked) is
  counted as the handler reads it, and reading fails with a 413 the moment the
  count passes the limit, so at most the limit is ever held in memory.

(Starlette's own ``max_body_size`` does the same counting but answers in plain
text, and overwrites any earlier answer with it: hence this.)
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runstream.api.errors import error_response


def body_too_large_message(limit: int) -> str:
    return f"the request body is larger than {limit} bytes, the most allowed"


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
            response = error_response(400, "invalid_url", "the URL must not contain NUL characters")
            await response(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            response = error_response(413, "body_too_large", body_too_large_message(self.max_body_bytes))
            await response(scope, receive, send)
            return
        if not length and "transfer-encoding" not in headers:
            # No body can follow (HTTP/1.1 framing): nothing to count. Most requests,
            # and every event stream, which would otherwise hold the counter for its life.
            await self.app(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Raised inside the handler's read: the JSON error handlers answer it.
                    raise HTTPException(413, body_too_large_message(self.max_body_bytes))
            return message

        return counted
