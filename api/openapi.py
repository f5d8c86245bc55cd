"""The OpenAPI 3.1 document of the API, served at ``/api/openapi.json``.

It is built from the live route table, so it lists exactly the routes the app
serves: a route without an entry in ``OPERATIONS`` still appears, with its path
parameters, its methods, its docstring and the error form. The new-job body is
the JSON Schema of the pydantic model the handler validates with.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from runstream.api.auth import OPEN_PATHS, STREAM_TOKEN_ATTR
from runstream.api.continuation import ContinueBody
from runstream.api.params import MAX_LIMIT
from runstream.api.payloads import NewJob
from runstream.db.jobs import STATUSES

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


EVENT_ID = {"type": "integer", "minimum": -1, "maximum": 2**63 - 1}
TOKEN_PARAM = _query("token", {"type": "string"}, "a stream token from POST /api/jobs, instead of a key")

JOB = {
    "type": "object",
    "required": ["job_id", "status", "created_at", "last_event_id"],
    "properties": {
        "job_id": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "enum": list(STATUSES)},
        "user_id": {"type": ["string", "null"], "description": "the user the authenticator named; null: none"},
        "session_id": {"type": ["string", "null"]},
        "message": {"type": "string"},
        "model": {"type": "string"},
        "agent": {"type": ["string", "null"], "description": "the agent that runs the job (GET /api/agents)"},
        "metadata": {"type": "object"},
        "output": {"description": "the run's structured answer (an agent with an output_schema), else null"},
        "attempt": {"type": "integer"},
        "last_event_id": {"type": "integer"},
        "error": {"type": ["string", "null"]},
        "cancel_requested": {"type": "boolean"},
        "requirements": {
            "type": ["array", "null"],
            "description": "a paused job's outstanding requirements (its input_required event's list), else null",
        },
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "queued": {"type": "boolean", "description": "waiting behind its session's active run"},
        "interrupted": {"type": "boolean", "description": "cancelled by a later job of its session"},
        "webhook": {"type": ["object", "null"], "properties": {"url": {"type": "string"}}},
    },
}
WEBHOOK_DELIVERIES = {
    "type": "object",
    "required": ["job_id", "webhook", "deliveries"],
    "properties": {
        "job_id": {"type": "string", "format": "uuid"},
        "webhook": {"type": ["object", "null"], "properties": {"url": {"type": "string"}}},
        "deliveries": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "webhook_id": {"type": "string", "description": "the webhook-id header of every attempt"},
                    "url": {"type": "string"},
                    "job_status": {"type": "string", "enum": list(STATUSES)},
                    "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                    "attempts": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "attempt": {"type": "integer"},
                                "outcome": {"type": "string", "enum": ["delivered", "failed", "refused"]},
                                "response_status": {"type": ["integer", "null"]},
                                "duration_ms": {"type": "number"},
                                "error": {"type": ["string", "null"]},
                                "at": {"type": "string", "format": "date-time"},
                            },
                        },
                    },
                    "created_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
        },
    },
}
STREAM_LINKS = {
    "type": "object",
    "properties": {
        "stream_token": {"type": "string"},
        "stream_token_expires_at": {"type": "string", "format": "date-time"},
        "events_url": {"type": "string", "description": "the absolute events URL with ?token="},
        "cancel_url": {"type": "string", "description": "the absolute cancel URL with ?token="},
        "continue_url": {"type": "string", "description": "the absolute continue URL with ?token="},
    },
}

# The request bodies' own schemas; the models they nest ($defs) become components of their own.
NEW_JOB = NewJob.model_json_schema(ref_template="#/components/schemas/{model}")
NEW_JOB_PARTS = NEW_JOB.pop("$defs", {})
CONTINUE_BODY = ContinueBody.model_json_schema(ref_template="#/components/schemas/{model}")
CONTINUE_BODY_PARTS = CONTINUE_BODY.pop("$defs", {})

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "NewJob": NEW_JOB,
    **NEW_JOB_PARTS,
    "ContinueBody": CONTINUE_BODY,
    **CONTINUE_BODY_PARTS,
    "Job": JOB,
    "JobWithStream": {"allOf": [_ref("Job"), STREAM_LINKS]},
    "WebhookDeliveries": WEBHOOK_DELIVERIES,
    "JobList": {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {"jobs": {"type": "array", "items": _ref("Job")}, "next_cursor": {"type": ["string", "null"]}},
    },
    "AgentList": {
        "type": "object",
        "required": ["agents", "default"],
        "properties": {
            "agents": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "kind", "description", "default"],
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {
                            "type": ["string", "null"],
                            "enum": ["agent", "team", "workflow", "factory", None],
                            "description": "null until a worker serving this import path has started",
                        },
                        "description": {"type": ["string", "null"]},
                        "default": {"type": "boolean"},
                    },
                },
            },
            "default": {"type": "string"},
        },
    },
    "CancelResult": {
        "type": "object",
        "required": ["status", "job_status"],
        "properties": {"status": {"const": "ok"}, "job_status": {"type": "string", "enum": list(STATUSES)}},
    },
}

NOT_FOUND = {"404": _error("no such job for this tenant (another tenant's job too)")}
TOO_MANY = {"429": _error("a limit is reached; see the Retry-After header")}

# What the generic entry cannot say. Keyed by (path, method).
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/jobs", "post"): {
        "summary": "Create a job: the row is committed, then dispatched to the workers",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NewJob")}}},
        "responses": {
            "202": _json(_ref("JobWithStream"), "the job, pending, with its stream token and URLs"),
            "400": _error("the body is not JSON"),
            "413": _error("the body is over the size limit"),
            "409": _error("if_busy reject and the session has a run in progress: error.active_job names it"),
            "422": _error("the body is JSON of the wrong shape, the message is too long, the webhook URL is refused, or the agent is unknown"),
            **TOO_MANY,
        },
    },
    ("/api/jobs/{job_id}/webhooks", "get"): {
        "summary": "The job's webhook deliveries, each with every attempt",
        "responses": {"200": _json(_ref("WebhookDeliveries"), "the deliveries"), **NOT_FOUND},
    },
    ("/api/jobs", "get"): {
        "summary": "This tenant's jobs, newest first (keyset paging)",
        "parameters": [
            _query("user_id", {"type": "string"}, "only this user's jobs"),
            _query("session_id", {"type": "string"}, "only this session's jobs"),
            _query("status", {"type": "string", "enum": list(STATUSES)}, "only jobs in this status"),
            _query("agent", {"type": "string"}, "only jobs of this agent"),
            _query("created_after", {"type": "string", "format": "date-time"}, "only jobs created at or after this"),
            _query("created_before", {"type": "string", "format": "date-time"}, "only jobs created before this"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "page size"),
            _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
        ],
        "responses": {"200": _json(_ref("JobList"), "a page of jobs"), "400": _error("a bad filter or cursor")},
    },
    ("/api/agents", "get"): {
        "summary": "The agents jobs may name (RUNSTREAM_AGENTS), with kind and description",
        "responses": {"200": _json(_ref("AgentList"), "the agents")},
    },
    ("/api/jobs/{job_id}", "get"): {
        "summary": "A job's status, with a fresh stream token",
        "responses": {"200": _json(_ref("JobWithStream"), "the job"), **NOT_FOUND},
    },
    ("/api/jobs/{job_id}/cancel", "post"): {
        "summary": "Cancel a job (idempotent)",
        "parameters": [TOKEN_PARAM],
        "responses": {"200": _json(_ref("CancelResult"), "cancelled, or asked to stop"), **NOT_FOUND},
    },
    ("/api/jobs/transitions", "get"): {
        "summary": "This tenant's job status transitions: SSE, replay then live, never ending",
        "parameters": [
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": EVENT_ID},
            _query("last_event_id", EVENT_ID, "resume after this transition (the header wins); none: live only"),
        ],
        "responses": {
            "200": {"description": "the stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "400": _error("a bad or future transition id"),
            **TOO_MANY,
        },
    },
    ("/api/analytics/series", "get"): {
        "summary": "This tenant's jobs per interval of [since, until): outcomes, retries, TTFT and duration p50/p95",
        "parameters": [
            _query("since", {"type": "string", "format": "date-time"}, "required: the first interval starts here"),
            _query("until", {"type": "string", "format": "date-time"}, "the end (default: now)"),
            _query("interval_s", {"type": "integer", "minimum": 1}, "required: the interval, in seconds"),
            _query("session_id", {"type": "string"}, "only this session's jobs"),
            _query("agent", {"type": "string"}, "only jobs of this agent"),
        ],
        "responses": {"200": {"description": "the intervals, oldest first"}, "400": _error("a bad window or interval")},
    },
    ("/api/analytics/jobs", "get"): {
        "summary": "Queue wait, time to first token and duration of up to 100 of this tenant's jobs",
        "parameters": [_query("ids", {"type": "string"}, "required: job ids, comma-separated")],
        "responses": {"200": {"description": "the timings of the ids that name jobs"}, "400": _error("bad ids")},
    },
    ("/api/jobs/{job_id}/continue", "post"): {
        "summary": "Answer a paused job's requirements (input_required); a worker continues the run",
        "parameters": [TOKEN_PARAM],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ContinueBody")}}},
        "responses": {
            "202": _json(_ref("Job"), "the answers are kept and the job is pending again"),
            "400": _error("the body is not JSON"),
            "409": _error("the job is not paused (already answered, finished, or not yet paused): nothing changed"),
            "422": _error("the answers do not fit the outstanding requirements (the message says which and why)"),
            **NOT_FOUND,
        },
    },
    ("/api/jobs/{job_id}/events", "get"): {
        "summary": "The job's events: SSE, replay then live (or a JSON page with Accept: application/json)",
        "parameters": [
            TOKEN_PARAM,
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": EVENT_ID},
            _query("last_event_id", EVENT_ID, "resume after this event (the header wins)"),
            _query("after", EVENT_ID, "JSON page: events after this id"),
            _query("limit", {"type": "integer", "minimum": 1}, "JSON page size"),
        ],
        "responses": {
            "200": {"description": "the stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "400": _error("a bad event id"),
            **NOT_FOUND,
            **TOO_MANY,
        },
    },
}


def _methods(route: Route) -> list[str]:
    if route.methods is not None:
        return [m.lower() for m in sorted(route.methods) if m.lower() in HTTP_METHODS]
    endpoint = route.endpoint
    if isinstance(endpoint, type) and issubclass(endpoint, HTTPEndpoint):
        return [m for m in HTTP_METHODS if hasattr(endpoint, m)]
    return ["get"]


def _routes(routes: list[BaseRoute]) -> list[Route]:
    """Every Route, mounted ones too (static files and other non-JSON mounts are not API)."""
    found: list[Route] = []
    for route in routes:
        if isinstance(route, Route):
            found.append(route)
        elif isinstance(route, Mount) and route.routes:
            found.extend(
                Route(route.path + sub.path, sub.endpoint, methods=sub.methods)
                for sub in _routes(route.routes)
            )
    return found


def _operation(route: Route, path: str, method: str) -> dict[str, Any]:
    doc = (route.endpoint.__doc__ or "").strip().splitlines()
    operation: dict[str, Any] = {
        "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
        "summary": doc[0] if doc else path,
        "responses": {"default": _error("an error")},
    }
    operation.update(OPERATIONS.get((path, method), {}))
    operation["responses"] = {"401": _error("no valid key or token"), **operation["responses"]}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.param_convertors
    ] + operation.get("parameters", [])
    if parameters:
        operation["parameters"] = parameters
    if path in OPEN_PATHS:
        operation["security"] = []
        del operation["responses"]["401"]
    elif getattr(route.endpoint, STREAM_TOKEN_ATTR, False):
        operation["security"] = [{"apiKey": []}, {"streamToken": []}]
    return operation


def document(routes: list[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in _routes(routes):
        path = route.path_format
        for method in _methods(route):
            paths.setdefault(path, {})[method] = _operation(route, path, method)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Runstream",
            "version": version("runstream"),
            "description": "Durable, resumable AI-agent runs streamed over SSE. Security: docs/security.md.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "a key from RUNSTREAM_API_KEYS"},
                "streamToken": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
        "security": [{"apiKey": []}],
    }


async def openapi_json(request: Request) -> JSONResponse:
    """This document."""
    return JSONResponse(document(request.app.routes))
