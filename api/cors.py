"""CORS: only the configured origins may call the API from a browser.

Starlette's CORSMiddleware does the work; the only change is that a refused
preflight answers in the API's JSON error form instead of plain text. The API
authenticates with a bearer key or a stream token, never a cookie, so
credentials are not allowed cross-origin.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from runstream.api.errors import error_response
from runstream.core.settings import Settings

# Any port of the loopback names: what a dev server (Vite, Next) serves a page from.
LOCALHOST_ORIGIN_REGEX = r"http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?"


class JsonCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        # Keep the CORS headers (Vary, Allow-Methods ...) the refusal carries.
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        return error_response(400, "cors_refused", bytes(response.body).decode(), headers=headers)


def cors_options(settings: Settings) -> dict[str, Any] | None:
    """JsonCORSMiddleware's options; None when no origin is configured: then no
    cross-origin call is allowed at all."""
    regex = LOCALHOST_ORIGIN_REGEX if settings.cors_allow_localhost else None
    if not settings.cors_origin_list and regex is None:
        return None
    return dict(
        allow_origins=settings.cors_origin_list,
        allow_origin_regex=regex,
        allow_methods=("GET", "POST"),
        allow_headers=("Authorization", "Content-Type", "Last-Event-ID"),
        expose_headers=("Retry-After",),
        allow_credentials=False,
    )
