"""Reading what a request asks for: path ids, the resume point, query parameters.

Each route's query parameters are one pydantic model: ``parse_query`` reads the
request with it, and /api/openapi.json lists each of its fields as a parameter
with the field's schema, so the document states exactly what is accepted. A
value the model refuses is a 400 ``invalid_<parameter>`` before any work starts.
A parameter is optional unless its model lists it in ``required``, which its
handler then checks itself (with the error code its endpoint documents);
parameters no model names are ignored.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.requests import Request

from runstream.api.cursor import MAX_CURSOR_CHARS, decode_cursor
from runstream.api.errors import ApiError, not_found
from runstream.api.payloads import Text, problem
from runstream.db.status import Status

# Integers as query text: ASCII digits with an optional minus, nothing else
# (no "+1", "1e3", "1.0", full-width digits, or 10 000 digits).
INTEGER = re.compile(r"-?[0-9]{1,19}")
# Instants as RFC 3339 date-times (the zone may be left out: UTC), nothing looser:
# no bare dates, week dates or Unix times.
DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
MAX_SEQ = 2**63 - 1
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Pages of the log as JSON (exports read many rows per request).
DEFAULT_PAGE_EVENTS = 500
MAX_PAGE_EVENTS = 1000
DEFAULT_RUNS = 100
MAX_RUNS = 1000
# The format a schema gives the list cursor: opaque, only ever one this API gave out.
CURSOR_FORMAT = "runstream-cursor"


def _integer_text(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not INTEGER.fullmatch(text):
            raise ValueError("must be an integer")
        return int(text)
    return value


def _unset_if_blank(value: Any) -> Any:
    return None if value == "" else value


def _instant(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    if not DATE_TIME.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time, such as 2026-01-02T03:04:05Z")
    moment = datetime.fromisoformat(value.upper())
    # No zone: UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _decodable_cursor(text: str | None) -> str | None:
    if text:
        try:
            decode_cursor(text)
        except ApiError as exc:
            raise ValueError(exc.message) from None
    return text or None


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# An empty value is the same as leaving the parameter out, where the schema says so.
Blank = Literal[""]
QueryInteger = Annotated[int, BeforeValidator(_integer_text)]
EventId = Annotated[int, Field(ge=-1, le=MAX_SEQ), BeforeValidator(_integer_text)]
QueryText = Annotated[Text | None, AfterValidator(_unset_if_blank)]
StatusFilter = Annotated[Status | Blank | None, AfterValidator(_unset_if_blank)]
QueryInstant = Annotated[
    datetime | Blank | None,
    BeforeValidator(_instant),
    AfterValidator(_unset_if_blank),
    Field(description="an RFC 3339 date-time (no zone: UTC); empty: unbounded"),
]
# A list as one parameter, its items separated by commas (OpenAPI's form style, not exploded).
JobIds = Annotated[list[uuid.UUID], Field(min_length=1, max_length=MAX_LIMIT), BeforeValidator(_comma_separated)]
Cursor = Annotated[
    Annotated[str, Field(max_length=MAX_CURSOR_CHARS)] | None,
    AfterValidator(_decodable_cursor),
    Field(
        json_schema_extra={"format": CURSOR_FORMAT},
        description="next_cursor of the previous page (opaque: only one this API gave out)",
    ),
]


class Query(BaseModel):
    """A route's query parameters. Strings as sent: query values are text."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    # Documented as required; the handler answers its own 400 when one is missing.
    required: ClassVar[tuple[str, ...]] = ()


class JobListQuery(Query):
    user_id: QueryText = Field(None, description="only this user's jobs (as the authenticator named them)")
    session_id: QueryText = Field(None, description="only this session's jobs")
    status: StatusFilter = Field(None, description="only jobs in this status (empty: any)")
    agent: QueryText = Field(None, description="only jobs of this agent (GET /api/agents)")
    created_after: QueryInstant = Field(None, description="only jobs created at or after this (no zone: UTC)")
    created_before: QueryInstant = Field(None, description="only jobs created before this (no zone: UTC)")
    limit: QueryInteger = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="page size")
    cursor: Cursor = None

    @property
    def position(self) -> tuple[datetime, uuid.UUID] | None:
        """Where the page starts: the decoded cursor (checked when the query was read)."""
        return decode_cursor(self.cursor) if self.cursor else None


class ResumeQuery(Query):
    """A stream's resume point (the ``Last-Event-ID`` header wins)."""

    last_event_id: EventId | None = Field(
        None, description="resume the stream after this event id (-1: from the start)"
    )


class EventsQuery(ResumeQuery):
    """``last_event_id`` is the stream's resume point (the ``Last-Event-ID`` header
    wins); ``after`` and ``limit`` page the log as JSON (``Accept: application/json``)."""

    after: EventId = Field(-1, description="JSON page: the events after this id")
    limit: QueryInteger = Field(
        DEFAULT_PAGE_EVENTS, ge=1, le=MAX_PAGE_EVENTS, description="JSON page: at most this many events"
    )


class MessagesQuery(Query):
    format: Literal["agno", "deltakit"] = Field("agno", description="Agno's message format or DeltaKit's message/parts")
    limit: QueryInteger = Field(DEFAULT_RUNS, ge=1, le=MAX_RUNS, description="the newest runs, at most this many")


class SummaryQuery(Query):
    since: QueryInstant = None
    until: QueryInstant = None
    session_id: QueryText = Field(None, description="only this session's jobs")
    agent: QueryText = Field(None, description="only jobs of this agent")


class SeriesQuery(SummaryQuery):
    """``since`` (a 400 ``missing_since`` without it: the series starts there) and ``interval_s``."""

    required = ("since", "interval_s")
    interval_s: QueryInteger | None = Field(
        None, ge=1, description="required: the length of each interval, in whole seconds"
    )


class TransitionsQuery(ResumeQuery):
    last_event_id: EventId | None = Field(
        None, description="resume after this transition id (the Last-Event-ID header wins); unset: live only"
    )


class JobIdsQuery(Query):
    required = ("ids",)

    ids: JobIds | None = Field(None, description=f"1 to {MAX_LIMIT} job ids, comma-separated")


class StreamTokenQuery(Query):
    token: Text | None = Field(None, description="a stream token from the job's JSON, instead of a key")


QueryModel = TypeVar("QueryModel", bound=Query)


def parse_query(model: type[QueryModel], request: Request) -> QueryModel:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        name = str(errors[0]["loc"][0])
        message = problem(errors).removeprefix(f"{name}: ").removeprefix("Value error, ")
        raise ApiError(400, f"invalid_{name}", f"{name}: {message}") from None


def job_id(request: Request) -> uuid.UUID:
    """A malformed id names no job: 404, like an unknown one."""
    try:
        return uuid.UUID(request.path_params["job_id"])
    except ValueError:
        raise not_found() from None


LAST_EVENT_ID_HEADER = TypeAdapter(EventId)


def resume_point(request: Request, query: ResumeQuery) -> int:
    """The last event the client has: ``Last-Event-ID`` header, else the
    ``last_event_id`` query parameter, else -1."""
    given = given_resume_point(request, query)
    return -1 if given is None else given


def given_resume_point(request: Request, query: ResumeQuery) -> int | None:
    """``Last-Event-ID`` header, else the ``last_event_id`` query parameter, else
    None. The header wins because EventSource reconnects to the original URL,
    query and all. A header that is sent must hold an event id: empty is a 400,
    as in the query (EventSource sends none until it has an id)."""
    header = request.headers.get("last-event-id")
    if header is not None:
        try:
            return LAST_EVENT_ID_HEADER.validate_python(header)
        except ValidationError:
            raise ApiError(
                400, "invalid_last_event_id", "Last-Event-ID must be an event id (an integer, -1 or more)"
            ) from None
    return query.last_event_id
