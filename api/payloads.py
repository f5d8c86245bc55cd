"""The JSON the API takes and gives, as pydantic models.

Each model is the one source of its shape: a request model validates the body,
a response model shapes the answer, and /api/openapi.json publishes both models'
JSON Schemas, so the document cannot say other than the server does. Every limit
the server enforces on a value is a constraint of its model (a length, a
pattern, a range), and so is in the schema. Adding a field is one line here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    create_model,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import ErrorDetails
from starlette.responses import Response
from typing_extensions import TypeAliasType

from runstream.api.errors import ApiError
from runstream.db.job_json import Instant, JobJson, JobWebhook
from runstream.db.jobs import JobRow
from runstream.db.status import Status

# A session id is a key, not text: room for any id scheme, small enough to index.
MAX_SESSION_ID_CHARS = 256
# As long as an agent's name may be (runstream.core.settings).
MAX_AGENT_NAME_CHARS = 64
MAX_WEBHOOK_URL_CHARS = 2048
# A person's note to a rejected confirmation.
MAX_NOTE_CHARS = 2000
# Postgres text and jsonb cannot hold NUL.
NO_NUL = r"^[^\x00]*$"
# Unicode's White_Space characters, spelled out, so that every regex engine reads
# the same class (pydantic's Rust one, a client's ECMA one, a test generator's).
WHITESPACE = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Not blank (a character other than whitespace), and no NUL.
MESSAGE_PATTERN = rf"^[^\x00]*[^\x00{WHITESPACE}][^\x00]*$"
# A webhook URL: http(s), a host (a name, or an IPv6 address in brackets), a
# port (0-65535) if any, no credentials, no whitespace or control characters.
# What matches is a URL the destination check parses (it then checks the address
# the host resolves to).
HEXTET = "[0-9A-Fa-f]{1,4}"
IPV6 = "|".join(
    [
        rf"({HEXTET}:){{7}}{HEXTET}",
        rf"({HEXTET}:){{1,7}}:",
        *(rf"({HEXTET}:){{1,{7 - n}}}(:{HEXTET}){{1,{n}}}" for n in range(1, 7)),
        rf":((:{HEXTET}){{1,7}}|:)",
    ]
)
PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
WEBHOOK_HOST = rf"([A-Za-z0-9._~%!$&'()*+,;=-]+|\[({IPV6})\])"
WEBHOOK_URL_PATTERN = rf"^https?://{WEBHOOK_HOST}(:{PORT})?([/?#][^\x00-\x20\x7f]*)?$"
PATTERN_MEANINGS = {
    WEBHOOK_URL_PATTERN: "must be an http:// or https:// URL with a host, without credentials or whitespace",
    NO_NUL: "must not contain NUL characters (\\u0000)",
    MESSAGE_PATTERN: "must hold a character other than whitespace, and no NUL characters (\\u0000)",
}
# pydantic_core's JSON parser refuses deeper nesting (a 400, like any invalid JSON).
MAX_JSON_DEPTH = 200
AGENT_DESCRIPTION = "a name from RUNSTREAM_AGENTS (GET /api/agents); unset: the default agent"
# What a new job does when its session has a run still active.
IfBusy = Literal["enqueue", "reject", "interrupt", "rollback"]

Text = Annotated[str, Field(pattern=NO_NUL)]
FiniteNumber = Annotated[float, Field(allow_inf_nan=False)]
# What Postgres jsonb stores: JSON without NUL in any string or key, and with
# finite numbers only (the JSON parser takes NaN and Infinity; jsonb does not).
StorableJson = TypeAliasType(
    "StorableJson",
    "None | bool | int | FiniteNumber | Text | list[StorableJson] | dict[Text, StorableJson]",
)
Metadata = Annotated[
    dict[Text, StorableJson],
    Field(
        description=(
            "any JSON object, kept with the job: no NUL (\\u0000) in any string or key, finite numbers only, "
            f"nested at most {MAX_JSON_DEPTH} levels"
        )
    ),
]


# --- requests ------------------------------------------------------------------


def _message(max_chars: int | None = None) -> Any:
    return Field(min_length=1, max_length=max_chars, pattern=MESSAGE_PATTERN, description="the user's message")


class WebhookTarget(BaseModel):
    """Where a job's terminal states are POSTed (checked when the job is created)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    url: str = Field(max_length=MAX_WEBHOOK_URL_CHARS, pattern=WEBHOOK_URL_PATTERN)


class NewJob(BaseModel):
    """The body of ``POST /api/jobs``. Unknown fields are ignored, because
    DeltaKit's startBody lets a page add its own. Strings: valid UTF-8 JSON,
    so no lone surrogates (the parser refuses them, a 400)."""

    # Strict: a number is not a message.
    model_config = ConfigDict(strict=True, extra="ignore", title="NewJob")

    message: str = _message()
    session_id: str | None = Field(default=None, max_length=MAX_SESSION_ID_CHARS, pattern=NO_NUL)
    metadata: Metadata | None = None
    agent: str | None = Field(
        default=None, max_length=MAX_AGENT_NAME_CHARS, pattern=NO_NUL, description=AGENT_DESCRIPTION
    )
    if_busy: IfBusy | None = Field(
        default=None,
        description="when the session has a run still active; unset: the setting RUNSTREAM_SESSION_IF_BUSY",
    )
    webhook: WebhookTarget | None = Field(
        default=None, description="unset: the tenant's default webhook (RUNSTREAM_WEBHOOK_URLS), if any"
    )


@lru_cache
def new_job_model(max_message_chars: int, agents: tuple[str, ...]) -> type[NewJob]:
    """NewJob with this deployment's message length limit (RUNSTREAM_MAX_MESSAGE_CHARS)
    and the names of the agents it serves (RUNSTREAM_AGENTS), so its schema states both."""
    agent_name: Any = Literal.__getitem__(agents)
    return create_model(
        "NewJob",
        __base__=NewJob,
        message=(str, _message(max_message_chars)),
        agent=(agent_name | None, Field(default=None, description=AGENT_DESCRIPTION)),
    )


def problem(errors: list[ErrorDetails], depth: int = 1) -> str:
    """The first validation error as a client reads it: where (the first ``depth``
    steps of its path), and what is wrong. A value that fits no member of a union
    fails each member; the error that is not merely "not of this type" says what
    is wrong with it."""
    error = min(errors, key=lambda e: e["type"].endswith("_type"))
    # The field, not the path inside it: within metadata the path holds pydantic's
    # names of union members, which mean nothing to a client.
    where = ".".join(str(part) for part in error["loc"][:depth]) or "body"
    context: dict[str, Any] = error.get("ctx") or {}
    pattern = context.get("pattern", "")
    return f"{where}: {PATTERN_MEANINGS.get(pattern, error['msg'])}"


def parse_new_job(body: bytes, max_message_chars: int, agents: Iterable[str]) -> NewJob:
    """Malformed JSON is a 400; well-formed JSON of the wrong shape, a message
    over ``max_message_chars``, or an agent not among ``agents``, is a 422."""
    if not body.strip():
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    names = tuple(agents)
    try:
        return new_job_model(max_message_chars, names).model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
        for error in errors:
            if error["loc"] == ("message",) and error["type"] == "string_too_long":
                length = len(error["input"])
                message = f"message has {length} characters, the most allowed is {max_message_chars}"
                raise ApiError(422, "message_too_long", message) from None
            if error["loc"] == ("agent",) and error["type"] == "literal_error" and isinstance(error["input"], str):
                message = f"unknown agent {error['input']!r}: this deployment serves {', '.join(names)}"
                raise ApiError(422, "unknown_agent", message) from None
        raise ApiError(422, "invalid_body", problem(errors)) from None


class RequirementAnswer(BaseModel):
    """The answer to one requirement of a paused job, by its id: ``confirmed``
    (and a ``note``) for a confirmation, ``values`` for user input, ``result``
    for an external execution."""

    model_config = ConfigDict(strict=True, extra="forbid")

    id: Text
    confirmed: bool | None = None
    note: Text | None = Field(default=None, max_length=MAX_NOTE_CHARS)
    values: Metadata | None = None
    result: Text | None = None


class ContinueBody(BaseModel):
    """The body of ``POST /api/jobs/{job_id}/continue``: an answer to every
    outstanding requirement of the job's ``input_required`` event."""

    model_config = ConfigDict(strict=True, extra="forbid")

    answers: list[RequirementAnswer] = Field(min_length=1)


def parse_continue(body: bytes) -> ContinueBody:
    """Malformed JSON is a 400; JSON of the wrong shape a 422."""
    if not body.strip():
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    try:
        return ContinueBody.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
        # answers.<index>.<field>: which answer, and which of its fields.
        raise ApiError(422, "invalid_body", problem(errors, depth=3)) from None


# --- answers -------------------------------------------------------------------


class JsonBody:
    """A model that is an answer's body: the response is the model's own JSON."""

    def response(self, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
        assert isinstance(self, BaseModel)
        return Response(self.model_dump_json(), status_code=status_code, headers=headers, media_type="application/json")


class Answer(JsonBody, BaseModel):
    """A JSON object answer. Built from database rows, which hold more than an
    answer shows (the tenant, heartbeats): what the model does not name stays out."""

    model_config = ConfigDict(extra="ignore")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable")
    message: str = Field(description="for people")


class Error(Answer):
    error: ErrorDetail


class Job(JobJson, Answer):
    """A job's status. ``last_event_id`` is its newest event id (-1: none yet),
    usable as is for the events stream's ``last_event_id``."""


class StreamLinks(BaseModel):
    """What a browser needs to stream and stop a job without a key."""

    stream_token: str
    stream_token_expires_at: Instant
    events_url: str = Field(description="the absolute events URL, with ?token=")
    cancel_url: str = Field(description="the absolute cancel URL, with ?token=")
    continue_url: str = Field(description="the absolute continue URL (a paused job's answers), with ?token=")


class JobWithStream(StreamLinks, Job):
    """A job, with what a browser needs to stream and stop it without a key."""

    @classmethod
    def of(cls, job: JobRow, links: dict[str, Any]) -> JobWithStream:
        """The job's fields and its links, each part validated by its own model."""
        return cls.model_construct(**dict(Job.model_validate(job)), **dict(StreamLinks.model_validate(links)))


class ActiveJob(StreamLinks):
    job_id: uuid.UUID
    status: Status


class SessionBusyDetail(ErrorDetail):
    active_job: ActiveJob = Field(description="the run that holds the session, with its URLs")


class SessionBusy(Answer):
    """409 ``session_busy`` (if_busy ``reject``): nothing was created."""

    error: SessionBusyDetail


class JobList(Answer):
    jobs: list[Job]
    next_cursor: str | None = Field(description="the cursor of the next page; null on the last one")


class CancelResult(Answer):
    status: Literal["ok"]
    job_status: Status = Field(
        description="cancelled: a pending job was cancelled here; running: its worker was asked to stop; "
        "or the status it had already ended in"
    )


class ClearResult(Answer):
    status: Literal["ok"]
    cleared_runs: int = Field(ge=0)


class Health(Answer):
    status: Literal["ok"]


CheckOutcome = Literal["ok", "timeout", "unreachable"]


class ReadinessChecks(BaseModel):
    database: CheckOutcome
    listen: Literal["ok", "reconnecting"]
    broker: CheckOutcome


class Readiness(Answer):
    status: Literal["ready", "unavailable"]
    checks: ReadinessChecks


class LoggedEvent(BaseModel):
    id: int = Field(ge=0, description="the event's sequence number")
    data: dict[str, Any] = Field(description="the event, as the stream's data: line carries it")
    at: Instant | None = Field(description="when the event was logged")


class StreamedEvent(BaseModel):
    """One event of a job's SSE stream, as an SSE parser reads it (the bytes are
    the stored event, framed by api.sse: ``id: <id>`` then ``data: <JSON>``)."""

    id: str = Field(pattern=r"^[0-9]+$", description="the event id")
    data: str = Field(
        json_schema_extra={"contentMediaType": "application/json"},
        description='the event as one line of JSON: {"type": ..., ...}',
    )


class EventsPage(Answer):
    job_id: uuid.UUID
    status: Status
    events: list[LoggedEvent]
    next: int = Field(ge=-1, description="the after of the next page")
    up_to_date: bool = Field(description="nothing after next had committed when the page was read")
    done: bool = Field(description="the page ends with the job's terminal event: nothing will follow")


class Run(BaseModel):
    job_id: uuid.UUID
    status: Status
    error: str | None
    in_progress: bool
    last_event_id: int = Field(ge=-1)
    interrupted: bool = Field(description="a later run of the session interrupted it: its answer is partial")


class SessionMessages(Answer):
    session_id: str
    format: Literal["agno", "deltakit"]
    messages: list[dict[str, Any]] = Field(
        description="in Agno's message format or DeltaKit's, each with its job_id; "
        'an interrupted run\'s answers carry "interrupted": true'
    )
    has_more: bool
    runs: list[Run]


class AgnoHistory(JsonBody, RootModel[list[dict[str, Any]]]):
    """The DeltaKit recipe's history: a bare list of Agno messages."""


class WebhookAttempt(BaseModel):
    attempt: int = Field(ge=1)
    outcome: Literal["delivered", "failed", "refused"]
    response_status: int | None
    duration_ms: float
    error: str | None
    at: Instant


class WebhookDelivery(BaseModel):
    webhook_id: str = Field(description="the webhook-id header of every attempt")
    url: str
    job_status: Status = Field(description="the state announced")
    status: Literal["pending", "delivered", "failed"]
    attempts: list[WebhookAttempt] = Field(validation_alias="attempt_log")
    created_at: Instant
    finished_at: Instant | None


class WebhookDeliveries(Answer):
    job_id: uuid.UUID
    webhook: JobWebhook | None
    deliveries: list[WebhookDelivery]


class Percentiles(BaseModel):
    count: int
    p50: float | None
    p95: float | None


class ToolStats(BaseModel):
    tool_name: str
    calls: int
    errors: int
    error_rate: float


class AgentStats(BaseModel):
    agent: str | None
    jobs: int
    completed: int
    failed: int
    cancelled: int
    duration_p50_s: float | None


class AnalyticsSummary(Answer):
    since: Instant | None
    until: Instant | None
    session_id: str | None
    agent: str | None
    jobs: int
    by_status: dict[Status, int]
    queue_wait_s: Percentiles
    ttft_s: Percentiles
    duration_s: Percentiles
    paused_s: Percentiles = Field(description="time spent paused, waiting for a person")
    retried_jobs: int
    retry_rate: float | None
    tools: list[ToolStats]
    by_agent: list[AgentStats]


class SeriesInterval(BaseModel):
    start: Instant
    jobs: int
    by_status: dict[Status, int]
    retried_jobs: int
    ttft_s: Percentiles
    duration_s: Percentiles


class AnalyticsSeries(Answer):
    since: Instant
    until: Instant
    interval_s: int = Field(ge=1)
    session_id: str | None
    agent: str | None
    intervals: list[SeriesInterval] = Field(description="oldest first")


class JobTimings(BaseModel):
    job_id: uuid.UUID
    session_id: str | None
    agent: str | None
    outcome: Status
    attempts: int
    queue_wait_s: float | None
    ttft_s: float | None
    duration_s: float | None


class JobsTimings(Answer):
    jobs: list[JobTimings] = Field(description="the ids that name jobs of this tenant; the others are left out")


class JobAnalytics(JobTimings, Answer):
    """One job's timings (as ``JobTimings``) and what its log holds."""

    paused_s: float | None
    events: int
    events_by_type: dict[str, int]
    text_chars: int
    tool_calls: int
    retries: int


class AgentInfo(BaseModel):
    name: str
    kind: Literal["agent", "team", "workflow", "factory"] | None = Field(
        description="null until a worker serving this import path has started"
    )
    description: str | None
    default: bool


class AgentList(Answer):
    agents: list[AgentInfo]
    default: str = Field(description="the agent of a job that names none")


class Transition(BaseModel):
    """One frame's data of the transitions stream: a job created (previous_status
    null), a new status, or a new attempt."""

    type: Literal["transition"] = "transition"
    job_id: uuid.UUID
    session_id: str | None
    agent: str | None
    status: Status
    previous_status: Status | None
    attempt: int
    at: Instant


class OpenApiJsonSchema(GenerateJsonSchema):
    """pydantic's JSON Schema, with a dict's key constraint as ``propertyNames``:
    pydantic writes it as ``patternProperties``, which lets keys that do not
    match through with any value."""

    def dict_schema(self, schema: Any) -> JsonSchemaValue:
        json_schema = super().dict_schema(schema)
        patterns = json_schema.pop("patternProperties", None)
        if patterns:
            [(pattern, values)] = patterns.items()
            json_schema["propertyNames"] = {"pattern": pattern}
            json_schema["additionalProperties"] = values
        return json_schema


def json_schemas(models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]]) -> dict[str, Any]:
    """The JSON Schemas of ``models`` and of what they refer to, by name, for components/schemas."""
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}", schema_generator=OpenApiJsonSchema)
    return top.get("$defs", {})
