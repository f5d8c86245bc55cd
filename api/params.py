"""Reading what a request asks for: path ids, the resume point, list filters.

Each function answers a clean value or raises ApiError before any work starts.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.requests import Request

from runstream.api.cursor import decode_cursor
from runstream.api.errors import ApiError, not_found
from runstream.db.jobs import STATUSES

# Event ids are bigint sequence numbers; -1 means "before the first event".
INTEGER = re.compile(r"-?[0-9]{1,19}")
MAX_SEQ = 2**63 - 1
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Pages of the log as JSON (exports read many rows per request).
DEFAULT_PAGE_EVENTS = 500
MAX_PAGE_EVENTS = 1000


def job_id(request: Request) -> uuid.UUID:
    """A malformed id names no job: 404, like an unknown one."""
    try:
        return uuid.UUID(request.path_params["job_id"])
    except ValueError:
        raise not_found() from None


def resume_point(request: Request) -> int:
    """The last event the client has: ``Last-Event-ID`` header, else the
    ``last_event_id`` query parameter, else -1."""
    given = given_resume_point(request)
    return -1 if given is None else given


def given_resume_point(request: Request) -> int | None:
    """``Last-Event-ID`` header, else the ``last_event_id`` query parameter, else
    None. The header wins because EventSource reconnects to the original URL,
    query and all."""
    header = request.headers.get("last-event-id", "").strip()
    if header:
        return _event_id(header, "Last-Event-ID")
    query = request.query_params.get("last_event_id")
    if query is not None:
        return _event_id(query.strip(), "last_event_id")
    return None


def instant(request: Request, name: str) -> datetime | None:
    """An ISO 8601 date-time query parameter (no zone: UTC), None when absent."""
    text = request.query_params.get(name)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"invalid_{name}", f"{name} must be an ISO 8601 date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _event_id(text: str, name: str) -> int:
    if INTEGER.fullmatch(text):
        value = int(text)
        if -1 <= value <= MAX_SEQ:
            return value
    raise ApiError(400, "invalid_last_event_id", f"{name} must be an event id (an integer, -1 or more)")


@dataclass(frozen=True)
class ListQuery:
    limit: int
    user_id: str | None
    session_id: str | None
    status: str | None
    agent: str | None
    created_after: datetime | None
    created_before: datetime | None
    cursor: tuple[datetime, uuid.UUID] | None


def list_query(request: Request) -> ListQuery:
    params = request.query_params
    limit_text = params.get("limit", str(DEFAULT_LIMIT))
    if not (INTEGER.fullmatch(limit_text) and 1 <= int(limit_text) <= MAX_LIMIT):
        raise ApiError(400, "invalid_limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise ApiError(400, "invalid_status", f"status must be one of {', '.join(STATUSES)}")
    cursor = params.get("cursor") or None
    return ListQuery(
        limit=int(limit_text),
        user_id=params.get("user_id") or None,
        session_id=params.get("session_id") or None,
        status=status,
        agent=params.get("agent") or None,
        created_after=instant(request, "created_after"),
        created_before=instant(request, "created_before"),
        cursor=decode_cursor(cursor) if cursor else None,
    )


def page_after(request: Request) -> int:
    """``after`` of a JSON page of the log: the last event id the client has (-1: none)."""
    return _event_id(request.query_params.get("after", "-1").strip(), "after")


def page_limit(request: Request) -> int:
    text = request.query_params.get("limit", str(DEFAULT_PAGE_EVENTS))
    if not (INTEGER.fullmatch(text) and 1 <= int(text) <= MAX_PAGE_EVENTS):
        raise ApiError(400, "invalid_limit", f"limit must be an integer from 1 to {MAX_PAGE_EVENTS}")
    return int(text)
