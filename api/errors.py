"""JSON errors. A client never sees a stack trace or an HTML page, whatever failed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from runstream.db.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# Starlette raises HTTPException for unknown routes (404) and wrong methods (405).
# api.guards raises a 413 while a body is read.
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


class ApiError(Exception):
    """Raised by a handler to answer with a JSON error."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        # More fields of the error object, besides code and message.
        self.details = details


def not_found(what: str = "job") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    error = {"code": code, "message": message, **(details or {})}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers, details=exc.details)


async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The database is restarting or unreachable: the pool replaces its connections
    # once it is back, so the same request is worth repeating shortly.
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        503, "database_unavailable", "the database is unreachable; retry shortly", headers={"Retry-After": "1"}
    )


async def on_server_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the exception itself after this answer; the client learns nothing of it.
    return error_response(500, "internal", "internal error")


EXCEPTION_HANDLERS = {
    ApiError: on_api_error,
    HTTPException: on_http_exception,
    DatabaseUnavailable: on_database_unavailable,
    Exception: on_server_error,
}
