"""Conversation history: ``/api/sessions/{session_id}/messages`` and ``.../clear``,
and what the DeltaKit alias needs for its ``GET {API_URL}`` and ``POST {API_URL}clear``.

A session's history is rebuilt from the event log (db.conversation explains why).

``GET /api/sessions/{id}/messages[?format=agno|deltakit][&limit=N]`` answers::

    {"session_id", "format", "messages": [...], "has_more": bool,
     "runs": [{"job_id", "status", "error", "in_progress", "last_event_id", "interrupted"}]}

``messages`` are in Agno's format (default) or DeltaKit's message/parts shape;
each carries the ``job_id`` of its run, and the assistant messages of a run that
a later run of the session interrupted (if_busy ``interrupt``) carry
``"interrupted": true``: their answer stops where the run was cancelled. (A run
rolled back, if_busy ``rollback``, is not in the history at all.) A run still in progress is included with
what it has streamed so far, up to its ``last_event_id``: a client shows that and
resumes the run's stream after that id, instead of starting the run again or
showing its events twice. ``limit`` (default 100, at most 1000) counts runs, the
newest; ``has_more`` says older ones exist.

Clearing marks the session's runs so far as cleared: they leave the history and
the agent's context, but the jobs and their events stay readable by job id (the
log is an audit trail); retention deletes them in time. Runs still in progress go
on, outside the conversation. A new run in the session starts a fresh conversation.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from runstream.api.params import MAX_RUNS, MessagesQuery, parse_query
from runstream.api.payloads import ClearResult, Run, SessionMessages
from runstream.api.tenancy import resolve_tenant
from runstream.db.connector import Pool
from runstream.db.conversation import Turn, agno_messages, deltakit_messages
from runstream.db.sessions import clear_session, conversation


def _messages(turns: list[Turn], format: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for turn in turns:
        shaped = agno_messages(turn) if format == "agno" else deltakit_messages(turn)
        for message in shaped:
            marks = {"interrupted": True} if turn.interrupted and message["role"] != "user" else {}
            out.append({**message, "job_id": str(turn.job_id), **marks})
    return out


def _run(turn: Turn) -> Run:
    return Run(
        job_id=turn.job_id,
        status=turn.status,
        error=turn.error,
        in_progress=turn.in_progress,
        last_event_id=turn.last_event_id,
        interrupted=turn.interrupted,
    )


async def session_messages(request: Request) -> Response:
    session_id = request.path_params["session_id"]
    query = parse_query(MessagesQuery, request)
    turns, has_more = await conversation(
        request.app.state.pool, tenant=resolve_tenant(request), session_id=session_id, limit=query.limit
    )
    return SessionMessages(
        session_id=session_id,
        format=query.format,
        messages=_messages(turns, query.format),
        has_more=has_more,
        runs=[_run(turn) for turn in turns],
    ).response()


async def clear_session_route(request: Request) -> Response:
    cleared = await clear(request.app.state.pool, resolve_tenant(request), request.path_params["session_id"])
    return ClearResult(status="ok", cleared_runs=cleared).response()


# --- for the DeltaKit alias ------------------------------------------------------
#
# DeltaKit's background-task example names no session: its backend uses one fixed
# server-side session id for the page (the constant below), its frontend calls
# ``GET {API_URL}`` and passes the bare array to ``fromAgnoAgents``, and ``POST
# {API_URL}clear`` when the user clears the chat. The alias creates its jobs in a
# session (this one, unless it has a better key such as the caller's tenant or a
# header) and answers those two calls with the functions below.

DELTAKIT_SESSION_ID = "default-agno-background-task"


async def agno_history(pool: Pool, tenant: str, session_id: str) -> list[dict[str, Any]]:
    """The body of ``GET {API_URL}``: a bare list of Agno messages. A run in
    progress contributes only its user message, marked ``"in_progress": true``
    (with its ``job_id``): DeltaKit resumes the run from its persisted run id and
    rebuilds the answer from the stream's replay, so the partial answer here would
    show twice, but without the question the resumed answer would stand under none."""
    turns, _ = await conversation(pool, tenant=tenant, session_id=session_id, limit=MAX_RUNS)
    messages: list[dict[str, Any]] = []
    for turn in turns:
        if turn.in_progress:
            question = agno_messages(turn)[0]
            messages.append({**question, "job_id": str(turn.job_id), "in_progress": True})
        else:
            messages.extend(agno_messages(turn))
    return messages


async def clear(pool: Pool, tenant: str, session_id: str) -> int:
    """``POST {API_URL}clear`` (and ``/api/sessions/{id}/clear``): see the module doc."""
    return await clear_session(pool, tenant=tenant, session_id=session_id)
