"""A session's conversation, rebuilt from the event log.

The log is the truth, so history is derived from it rather than kept as a second
copy (Agno's session storage would be one more store to keep in step with the
log, to migrate, and to prune). A run is one turn: the job's message is the user
message, and the events of its last attempt are the assistant's answer (a
``retry`` event means a new attempt starts and the partial answer before it is
discarded, as the protocol tells clients).

Two shapes come out of a turn:

* Agno's message format (``Message.to_dict()``: ``role``, ``content``,
  ``reasoning_content``, ``tool_calls`` in OpenAI form, tool messages with
  ``tool_call_id``, ``tool_name``, ``tool_args``), which the agent takes as its
  context and DeltaKit's ``fromAgnoAgents`` converts;
* DeltaKit's message/parts shape (``{id, role, parts}`` with ``text``,
  ``reasoning`` and ``tool_call`` parts, results attached by call id), the same
  parts a live stream builds with the recipe's ``onEvent``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runstream.db.status import TERMINAL_STATUSES, Status

Message = dict[str, Any]


@dataclass(frozen=True)
class LoggedEvent:
    seq: int
    attempt: int
    type: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass
class Turn:
    """One run of a session: the job (a row of ``queries.SESSION_RUNS``), and its events as read."""

    job_id: uuid.UUID
    status: Status
    message: str
    error: str | None
    created_at: datetime
    events: list[LoggedEvent] = field(default_factory=list)
    # A later run of the session cancelled this one (if_busy interrupt): its answer is partial.
    interrupted: bool = False

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @property
    def in_progress(self) -> bool:
        return self.status not in TERMINAL_STATUSES

    @property
    def last_event_id(self) -> int:
        """The newest event read for this turn (-1: none): a client that shows this
        turn resumes its stream after it, and so sees nothing twice."""
        return self.events[-1].seq if self.events else -1

    def answer(self) -> list[LoggedEvent]:
        """The events of the last attempt: what comes after the last ``retry``."""
        start = 0
        for index, event in enumerate(self.events):
            if event.type == "retry":
                start = index + 1
        return self.events[start:]


def _epoch(moment: datetime) -> int:
    # Agno's Message.created_at is epoch seconds.
    return int(moment.timestamp())


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def agno_messages(turn: Turn, *, for_model: bool = False) -> list[Message]:
    """The turn in Agno's message format.

    An assistant message collects reasoning, text and tool calls until the tool
    results come back; what follows them is the model's next response, a new
    assistant message (as Agno records a run). With ``for_model``, tool calls that
    never got a result are left out: a provider rejects a call with no answer.
    """
    key = str(turn.job_id)
    messages: list[Message] = [
        {"id": f"{key}-user", "role": "user", "content": turn.message, "created_at": _epoch(turn.created_at)}
    ]
    answered = {e.payload.get("call_id") for e in turn.answer() if e.type == "tool_result"}
    calls: dict[Any, dict[str, Any]] = {}
    current: Message | None = None
    responses = 0

    def assistant(event: LoggedEvent) -> Message:
        nonlocal current, responses
        if current is None:
            responses += 1
            current = {
                "id": f"{key}-assistant-{responses}",
                "role": "assistant",
                "created_at": _epoch(event.created_at),
            }
            messages.append(current)
        return current

    for event in turn.answer():
        payload = event.payload
        if event.type == "reasoning":
            message = assistant(event)
            message["reasoning_content"] = message.get("reasoning_content", "") + payload.get("text", "")
        elif event.type == "text_delta":
            message = assistant(event)
            message["content"] = message.get("content", "") + payload.get("delta", "")
        elif event.type == "tool_call":
            call_id = payload.get("call_id")
            if for_model and call_id not in answered:
                continue
            name = payload.get("tool_name", "")
            calls[call_id] = {"name": name, "args": _arguments(payload.get("argument", ""))}
            assistant(event).setdefault("tool_calls", []).append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": payload.get("argument", "")},
                }
            )
        elif event.type == "tool_result":
            call_id = payload.get("call_id")
            call = calls.get(call_id, {"name": "", "args": {}})
            messages.append(
                {
                    "id": f"{key}-tool-{call_id if call_id is not None else event.seq}",
                    "role": "tool",
                    "content": payload.get("output", ""),
                    "tool_call_id": call_id,
                    "tool_name": call["name"],
                    "tool_args": call["args"],
                    "created_at": _epoch(event.created_at),
                }
            )
            current = None
    if for_model:
        # A provider rejects an assistant message with neither text nor tool calls
        # (a run stopped while it was only reasoning).
        messages = [m for m in messages if m["role"] != "assistant" or m.get("content") or m.get("tool_calls")]
        # A context message is history, not part of this run (Agno's own flag).
        for message in messages:
            message["from_history"] = True
    return messages


def deltakit_messages(turn: Turn) -> list[Message]:
    """The turn as DeltaKit messages: the user's, then one assistant message whose
    parts are in stream order, consecutive text and reasoning merged, each tool
    result attached to its call (by call id, like the recipe's ``onEvent``)."""
    key = str(turn.job_id)
    user = {"id": f"{key}-user", "role": "user", "parts": [{"type": "text", "text": turn.message}]}
    parts: list[dict[str, Any]] = []
    for event in turn.answer():
        payload = event.payload
        if event.type in ("text_delta", "reasoning"):
            kind = "text" if event.type == "text_delta" else "reasoning"
            text = payload.get("delta" if kind == "text" else "text", "")
            if parts and parts[-1]["type"] == kind:
                parts[-1]["text"] += text
            else:
                parts.append({"type": kind, "text": text})
        elif event.type == "tool_call":
            part = {
                "type": "tool_call",
                "tool_name": payload.get("tool_name", ""),
                "argument": payload.get("argument", ""),
            }
            if payload.get("call_id") is not None:
                part["callId"] = payload["call_id"]
            parts.append(part)
        elif event.type == "tool_result":
            call_id = payload.get("call_id")
            for part in reversed(parts):
                if part["type"] == "tool_call" and part.get("callId") == call_id and "result" not in part:
                    part["result"] = payload.get("output", "")
                    break
    if not parts and not turn.in_progress:
        return [user]
    return [user, {"id": f"{key}-assistant", "role": "assistant", "parts": parts}]
