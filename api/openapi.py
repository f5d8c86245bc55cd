"""The OpenAPI 3.1 document of the API, served at ``/api/openapi.json``.

It is generated, never written: the paths from the live route table (so it lists
exactly the routes the app serves), and every schema from the pydantic models
the handlers validate with and answer with (api.payloads, api.params), so the
document cannot disagree with the server. Each endpoint's entry in ``ENDPOINTS``
names those models and the statuses it answers; an endpoint without one still
appears, with its path parameters and the error form. The DeltaKit alias routes
share their endpoints, so they are described alike.

What the document states beyond the models: the limits of the HTTP layer (414,
431) and of the body (413), which apply to every route, and the settings this
process runs with (the message length limit; whether /metrics needs a token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, TypeAdapter
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from runstream.api import (
    agents,
    analytics,
    continuation,
    deltakit,
    events,
    history,
    jobs,
    operations,
    transitions,
    webhooks,
)
from runstream.api.auth import METRICS_PATH, OPEN_PATHS, STREAM_TOKEN_ATTR
from runstream.api.params import (
    LAST_EVENT_ID_HEADER,
    EventsQuery,
    JobIdsQuery,
    JobListQuery,
    MessagesQuery,
    Query,
    SeriesQuery,
    StreamTokenQuery,
    SummaryQuery,
    TransitionsQuery,
)
from runstream.api.payloads import (
    NO_NUL,
    AgentList,
    AgnoHistory,
    AnalyticsSeries,
    AnalyticsSummary,
    CancelResult,
    ClearResult,
    ContinueBody,
    Error,
    EventsPage,
    Health,
    Job,
    JobAnalytics,
    JobList,
    JobsTimings,
    JobWithStream,
    Readiness,
    SessionBusy,
    SessionMessages,
    StreamedEvent,
    WebhookDeliveries,
    json_schemas,
    new_job_model,
)
from runstream.core.settings import Settings

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
# The models that are request bodies: their schemas say what is accepted.
REQUEST_BODIES = ("NewJob", ContinueBody.__name__)
SCHEMAS = "#/components/schemas/"


@dataclass(frozen=True)
class Outcome:
    """One status of an operation: its description and, per media type, its model
    (None: the body is described by ``schema``)."""

    description: str
    model: type[BaseModel] | None = None
    media_type: str = "application/json"
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    also: tuple[tuple[str, type[BaseModel]], ...] = ()


@dataclass(frozen=True)
class Header:
    name: str
    # The adapter the server validates the header with.
    adapter: TypeAdapter[Any]
    description: str


@dataclass(frozen=True)
class Operation:
    summary: str
    answers: dict[int, Outcome]
    query: tuple[type[Query], ...] = ()
    # Takes the new-job body (its model depends on the settings).
    new_job: bool = False
    # Takes this body.
    body: type[BaseModel] | None = None
    headers: tuple[Header, ...] = ()


def error(description: str) -> Outcome:
    return Outcome(description, Error)


NOT_FOUND = {404: error("no such job for this tenant (another tenant's job too; a malformed id too)")}
BAD_QUERY = {400: error("a query parameter out of its schema: invalid_<parameter>")}
CREATE = Operation(
    "Create a job: the row is committed, then dispatched to the workers",
    {
        202: Outcome("the job, pending, with its stream token and URLs", JobWithStream),
        400: error("the body is not JSON (invalid_json): empty, malformed, a lone surrogate, nested too deep"),
        409: Outcome(
            "if_busy reject, and the session has a run in progress (session_busy): error.active_job names it; "
            "nothing was created",
            SessionBusy,
        ),
        413: error("the body is over RUNSTREAM_MAX_BODY_BYTES (body_too_large)"),
        422: error(
            "JSON out of the NewJob schema (invalid_body), a message over the limit (message_too_long), "
            "an agent this deployment does not serve (unknown_agent: the message lists them), a webhook URL that may not be sent to (webhook_refused), or a webhook for a tenant without a "
            "signing secret (webhook_unavailable)"
        ),
        429: error("the tenant's job rate or active-job limit is reached; see Retry-After"),
    },
    new_job=True,
)

# What each endpoint takes and answers, beyond its path parameters.
ENDPOINTS: dict[Any, Operation] = {
    operations.healthz: Operation("The process is up", {200: Outcome("up", Health)}),
    operations.readyz: Operation(
        "The process can serve: database, LISTEN connection, broker",
        {200: Outcome("ready", Readiness), 503: Outcome("not ready: each failed check's reason code", Readiness)},
    ),
    operations.metrics: Operation(
        "Prometheus metrics",
        {200: Outcome("the metrics, in Prometheus' text format", media_type=CONTENT_TYPE_LATEST.split(";")[0])},
    ),
    jobs.list_jobs: Operation(
        "This tenant's jobs, newest first (keyset paging)",
        {200: Outcome("a page of jobs", JobList), **BAD_QUERY},
        query=(JobListQuery,),
    ),
    agents.list_agents: Operation(
        "The agents jobs may name (RUNSTREAM_AGENTS), with kind and description",
        {200: Outcome("the agents, and the default one", AgentList)},
    ),
    jobs.create_job: CREATE,
    deltakit.create_job: CREATE,
    jobs.get_job: Operation(
        "A job's status, with a fresh stream token", {200: Outcome("the job", JobWithStream), **NOT_FOUND}
    ),
    jobs.cancel_job: Operation(
        "Cancel a job (idempotent)",
        {200: Outcome("cancelled, or its worker asked to stop, or already ended", CancelResult), **NOT_FOUND},
        query=(StreamTokenQuery,),
    ),
    continuation.continue_job: Operation(
        "Answer a paused job's requirements (input_required); a worker continues the run",
        {
            202: Outcome("the answers are kept and the job is pending again", Job),
            400: error("the body is not JSON (invalid_json)"),
            409: error("the job is not paused (not_paused: already answered, finished, or not yet paused)"),
            413: error("the body is over RUNSTREAM_MAX_BODY_BYTES (body_too_large)"),
            422: error(
                "JSON out of the ContinueBody schema (invalid_body), or answers that do not fit the outstanding "
                "requirements (invalid_answers: the message says which and why); nothing changed"
            ),
            **NOT_FOUND,
        },
        query=(StreamTokenQuery,),
        body=ContinueBody,
    ),
    transitions.stream_transitions: Operation(
        "This tenant's job status transitions: SSE, replay then live; the stream never ends by itself",
        {
            200: Outcome(
                "the stream (text/event-stream): an opening id-only block, then each transition as below, "
                "its data one JSON line: type transition, job_id, session_id, agent, status, previous_status, attempt, at",
                StreamedEvent,
                media_type="text/event-stream",
            ),
            400: error("a parameter out of its schema, or a resume point beyond the newest transition"),
            429: error("this process's or this tenant's open-stream limit is reached; see Retry-After"),
        },
        query=(TransitionsQuery,),
        headers=(
            Header("Last-Event-ID", LAST_EVENT_ID_HEADER, "resume after this transition id (wins over last_event_id)"),
        ),
    ),
    webhooks.job_webhooks: Operation(
        "The job's webhook deliveries, each with every attempt",
        {200: Outcome("the deliveries", WebhookDeliveries), **NOT_FOUND},
    ),
    events.stream_events: Operation(
        "The job's events: SSE, replay then live; a JSON page of them with Accept: application/json",
        {
            200: Outcome(
                "the stream (text/event-stream: each event as below), or a page (application/json)",
                StreamedEvent,
                media_type="text/event-stream",
                also=(("application/json", EventsPage),),
            ),
            400: error("a parameter out of its schema, or a resume point beyond the job's newest event"),
            **NOT_FOUND,
            429: error("this process's or this tenant's open-stream limit is reached; see Retry-After"),
        },
        query=(EventsQuery, StreamTokenQuery),
        headers=(
            Header("Last-Event-ID", LAST_EVENT_ID_HEADER, "resume after this event id (wins over last_event_id)"),
        ),
    ),
    history.session_messages: Operation(
        "A session's conversation (another tenant's session reads as empty)",
        {200: Outcome("the conversation", SessionMessages), **BAD_QUERY},
        query=(MessagesQuery,),
    ),
    history.clear_session_route: Operation(
        "End a session's conversation (its runs stay readable by job id)",
        {200: Outcome("cleared", ClearResult)},
    ),
    analytics.analytics_summary: Operation(
        "Counts and percentiles over this tenant's jobs",
        {200: Outcome("the summary", AnalyticsSummary), **BAD_QUERY},
        query=(SummaryQuery,),
    ),
    analytics.analytics_series: Operation(
        "This tenant's jobs per interval of [since, until): outcomes, retries, TTFT and duration p50/p95",
        {
            200: Outcome("the intervals, oldest first", AnalyticsSeries),
            400: error(
                "a query parameter out of its schema (invalid_<parameter>), since or interval_s missing "
                "(missing_since, invalid_interval_s), until not after since (invalid_until), or over "
                f"{analytics.MAX_SERIES_INTERVALS} intervals (too_many_intervals)"
            ),
        },
        query=(SeriesQuery,),
    ),
    analytics.analytics_jobs: Operation(
        f"Queue wait, time to first token and duration of up to {analytics.MAX_TIMING_IDS} of this tenant's jobs",
        {
            200: Outcome("the timings of the ids that name jobs", JobsTimings),
            400: error(f"ids missing, over {analytics.MAX_TIMING_IDS}, or not UUIDs (invalid_ids)"),
        },
        query=(JobIdsQuery,),
    ),
    analytics.analytics_job: Operation(
        "One job's timings and counts", {200: Outcome("the job's analytics", JobAnalytics), **NOT_FOUND}
    ),
    deltakit.history: Operation(
        "The recipe's history: a bare list of Agno messages", {200: Outcome("the history", AgnoHistory)}
    ),
    deltakit.clear_history: Operation("The recipe's clear", {200: Outcome("cleared", ClearResult)}),
}
# Every route, before any handler: the HTTP layer and the request guard.
EVERY_ROUTE = {
    400: error("a NUL character in the path or query (invalid_url)"),
    414: error("the request target is over RUNSTREAM_MAX_URL_BYTES (uri_too_long)"),
    431: error("the request head is over RUNSTREAM_MAX_HEADER_BYTES, or has over RUNSTREAM_MAX_HEADERS fields"),
    500: error("an unexpected failure (internal): never a stack trace"),
}
UNAUTHORIZED = error("no valid key or token")
DATABASE_UNAVAILABLE = error("the database is unreachable (database_unavailable); see Retry-After")


def _endpoint(route: Route, method: str) -> Any:
    endpoint = route.endpoint
    if isinstance(endpoint, type) and issubclass(endpoint, HTTPEndpoint):
        return getattr(endpoint, method)
    return endpoint


def _methods(route: Route) -> list[str]:
    if route.methods is not None:
        return [m.lower() for m in sorted(route.methods) if m.lower() in HTTP_METHODS]
    endpoint = route.endpoint
    if isinstance(endpoint, type) and issubclass(endpoint, HTTPEndpoint):
        return [m for m in HTTP_METHODS if hasattr(endpoint, m)]
    return ["get"]


def _routes(routes: list[BaseRoute]) -> list[Route]:
    """Every Route, mounted ones too, but the chat page and the static files: not API."""
    found: list[Route] = []
    for route in routes:
        if isinstance(route, Route) and route.include_in_schema:
            found.append(route)
        elif isinstance(route, Mount) and route.routes:
            found.extend(
                Route(route.path + sub.path, sub.endpoint, methods=sub.methods) for sub in _routes(route.routes)
            )
    return found


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: leaving it out, not null, is how it is unset."""
    members = [member for member in schema.get("anyOf", []) if member != {"type": "null"}]
    if not members:
        return schema
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default", "title")}
    return {**members[0], **rest} if len(members) == 1 else {"anyOf": members, **rest}


def _query_parameters(model: type[Query]) -> list[dict[str, Any]]:
    properties = model.model_json_schema(ref_template=SCHEMAS + "{model}")["properties"]
    parameters = []
    for name, schema in properties.items():
        schema = _without_null({key: value for key, value in schema.items() if key != "title"})
        description = schema.pop("description", None)
        parameter = {"name": name, "in": "query", "required": name in model.required, "schema": schema}
        if schema.get("type") == "array":
            # One parameter, its items separated by commas (ids=a,b), as the model reads it.
            parameter |= {"style": "form", "explode": False}
        parameters.append(parameter | ({"description": description} if description else {}))
    return parameters


def _path_schema(name: str) -> dict[str, Any]:
    # A job id that is not a UUID names no job (a 404); NUL is refused in any path.
    if name == "job_id":
        return {"type": "string", "format": "uuid"}
    return {"type": "string", "pattern": NO_NUL}


def _content(answer: Outcome) -> dict[str, Any]:
    content = {
        answer.media_type: {"schema": {"$ref": SCHEMAS + answer.model.__name__} if answer.model else answer.schema}
    }
    content.update((media_type, {"schema": {"$ref": SCHEMAS + model.__name__}}) for media_type, model in answer.also)
    return content


class Builder:
    """Builds the document of one app, with the settings it runs with."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.new_job = new_job_model(settings.max_message_chars, tuple(settings.agent_paths))
        self.models: dict[str, type[BaseModel]] = {"Error": Error}

    def operation(self, route: Route, path: str, method: str) -> dict[str, Any]:
        endpoint = _endpoint(route, method)
        described = ENDPOINTS.get(endpoint)
        doc = (endpoint.__doc__ or "").strip().splitlines()
        operation: dict[str, Any] = {
            "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
            "summary": described.summary if described else (doc[0] if doc else path),
        }
        answers = dict(described.answers) if described else {}
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
            for name in route.param_convertors
        ]
        if described:
            for query in described.query:
                parameters += _query_parameters(query)
            parameters += [
                {"name": header.name, "in": "header", "required": False, "schema": header.adapter.json_schema()}
                | {"description": header.description}
                for header in described.headers
            ]
            body = self.new_job if described.new_job else described.body
            if body is not None:
                self.models[body.__name__] = body
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": SCHEMAS + body.__name__}}},
                }
        if parameters:
            operation["parameters"] = parameters
        if path == METRICS_PATH:
            operation["security"] = [{"metricsToken": []}] if self.settings.metrics_token else []
            if self.settings.metrics_token:
                answers[401] = error("no valid metrics token")
        elif path in OPEN_PATHS:
            operation["security"] = []
        else:
            answers[401] = UNAUTHORIZED
            answers[503] = DATABASE_UNAVAILABLE
            if getattr(endpoint, STREAM_TOKEN_ATTR, False):
                operation["security"] = [{"apiKey": []}, {"streamToken": []}]
        for answer in answers.values():
            for model in [answer.model, *(model for _, model in answer.also)]:
                if model is not None:
                    self.models[model.__name__] = model
        answers = {**answers, **{status: answer for status, answer in EVERY_ROUTE.items() if status not in answers}}
        operation["responses"] = {
            str(status): {"description": answer.description, "content": _content(answer)}
            for status, answer in sorted(answers.items())
        }
        return operation

    def document(self, routes: list[BaseRoute]) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        for route in _routes(routes):
            path = route.path_format
            for method in _methods(route):
                paths.setdefault(path, {})[method] = self.operation(route, path, method)
        link_jobs(paths)
        schemes = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "a key from RUNSTREAM_API_KEYS"},
            "streamToken": {"type": "apiKey", "in": "query", "name": "token", "description": "a job's stream token"},
        }
        if self.settings.metrics_token:
            schemes["metricsToken"] = {"type": "http", "scheme": "bearer", "description": "RUNSTREAM_METRICS_TOKEN"}
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "Runstream",
                "version": version("runstream"),
                "description": "Durable, resumable AI-agent runs streamed over SSE. Security: docs/security.md.",
            },
            "paths": paths,
            "components": {
                "schemas": json_schemas(
                    [
                        (model, "validation" if name in REQUEST_BODIES else "serialization")
                        for name, model in self.models.items()
                    ]
                ),
                "securitySchemes": schemes,
            },
            "security": [{"apiKey": []}],
        }


def link_jobs(paths: dict[str, dict[str, Any]]) -> None:
    """Links from a created job to every operation on a job (its status, cancel,
    events, analytics), so a client, or a stateful test, can follow them."""
    for item in paths.values():
        created = item.get("post", {}).get("responses", {}).get("202")
        if created is None:
            continue
        created["links"] = {
            operation["operationId"]: {
                "operationId": operation["operationId"],
                "parameters": {"job_id": "$response.body#/job_id"},
            }
            for other, other_item in paths.items()
            if "{job_id}" in other
            for operation in other_item.values()
        }


def document(routes: list[BaseRoute], settings: Settings) -> dict[str, Any]:
    return Builder(settings).document(routes)


async def openapi_json(request: Request) -> JSONResponse:
    """This document."""
    return JSONResponse(document(request.app.routes, request.app.state.settings))


ENDPOINTS[openapi_json] = Operation(
    "This document", {200: Outcome("the OpenAPI 3.1 document", schema={"type": "object"})}
)
