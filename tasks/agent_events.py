"""Agno run events → Runstream event payloads (DESIGN.md "Event payloads").

What Agno 3.1 emits for ``agent.arun(msg, stream=True, stream_events=True)``:
``RunContentEvent`` carries either a text delta in ``content`` or a reasoning
delta in ``reasoning_content`` (the other one is None or ""); ``ToolCallStarted``
and ``ToolCallCompleted`` carry a ``ToolExecution`` (``tool_call_id``,
``tool_name``, ``tool_args`` dict, ``result`` text — a failed tool's error text
too; the ``ToolCallError`` that follows it adds nothing); a model failure ends the
stream with ``RunErrorEvent`` (``content`` is the message). Bookkeeping events
(RunStarted, ModelRequestStarted/Completed, RunContentCompleted, RunCompleted)
map to nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, cast

from agno.agent import Agent
from agno.exceptions import redact_secrets
from agno.run.agent import (
    RunCancelledEvent,
    RunContentEvent,
    RunErrorEvent,
    ToolCallCompletedEvent,
    ToolCallStartedEvent,
)

Payload = dict[str, Any]

COMPLETED: Payload = {"type": "done", "status": "completed"}
CANCELLED: Payload = {"type": "done", "status": "cancelled"}


def error_payload(message: str) -> Payload:
    return {"type": "error", "message": message}


def to_payloads(event: Any) -> list[Payload]:
    """The payloads one Agno event stands for (none for bookkeeping events)."""
    if isinstance(event, RunContentEvent):
        payloads = []
        if event.reasoning_content:
            payloads.append({"type": "reasoning", "text": event.reasoning_content})
        if event.content is not None and event.content != "":
            text = event.content if isinstance(event.content, str) else json.dumps(event.content, default=str)
            payloads.append({"type": "text_delta", "delta": text})
        return payloads
    if isinstance(event, ToolCallStartedEvent) and event.tool is not None:
        return [
            {
                "type": "tool_call",
                "tool_name": event.tool.tool_name or "",
                "argument": json.dumps(event.tool.tool_args or {}, ensure_ascii=False),
                "call_id": event.tool.tool_call_id,
            }
        ]
    if isinstance(event, ToolCallCompletedEvent) and event.tool is not None:
        result = event.tool.result
        output = "" if result is None else str(result)
        return [{"type": "tool_result", "call_id": event.tool.tool_call_id, "output": output}]
    if isinstance(event, RunErrorEvent):
        # Provider messages sometimes echo credentials; the event log is read by browsers.
        return [error_payload(redact_secrets(event.content or "model run failed"))]
    if isinstance(event, RunCancelledEvent):
        return [CANCELLED]
    return []


def is_terminal(payload: Payload) -> bool:
    return payload["type"] in ("done", "error")


def final_status(payload: Payload) -> str:
    """The job status a terminal payload ends the job in."""
    return "failed" if payload["type"] == "error" else payload["status"]


async def run_payloads(agent: Agent, message: str) -> AsyncIterator[Payload]:
    """Run the agent and yield its payloads; the last one is always terminal
    (``done``/completed when the stream ends without an error)."""
    # aclosing: leaving early (terminal payload, cancel) closes Agno's generator
    # now, so its cleanup runs in this task rather than whenever it is collected.
    # Agno declares an AsyncIterator; what it returns is an async generator, which has aclose().
    run = cast(AsyncGenerator[Any, None], agent.arun(message, stream=True, stream_events=True))
    async with aclosing(run) as events:
        async for event in events:
            for payload in to_payloads(event):
                yield payload
                if is_terminal(payload):
                    return
    yield COMPLETED
