"""Agno run events → Runstream event payloads (docs/events.md).

One translator serves the three kinds of runnable. What Agno 3.1 emits for
``arun(input, stream=True, stream_events=True)``:

* an Agent's run: ``RunContentEvent`` carries a text delta in ``content`` or a
  reasoning delta in ``reasoning_content`` (or, with an ``output_schema``, the
  whole structured answer as a pydantic object); ``ToolCallStarted`` and
  ``ToolCallCompleted`` carry a ``ToolExecution`` (``tool_call_id``,
  ``tool_name``, ``tool_args``, ``result`` — a raising tool's error text, with
  ``tool_call_error`` set, and the run goes on); a failure ends the stream with
  ``RunErrorEvent``.
* a Team's run: the same events from ``agno.run.team`` for the leader (its
  delegations are calls of ``delegate_task_to_member(s)``), interleaved with the
  members' own agent (or team) events, which carry the member's run id.
* a Workflow's run: ``StepStarted``/``StepCompleted`` around each step, the
  step agents' own events in between, ``WorkflowCompleted`` with the final output.

The run Runstream started is the *top* run (its ``run_id`` is the one passed
in): its content is the answer the user reads (``text_delta``), its tool calls
are ``tool_call``/``tool_result``. Every other run (a team member, a step's
agent) is a *member* run: its activity goes out as ``member_*`` payloads, which
recipe clients ignore. When the top run streamed no text (a workflow, a team
that routes, a model that does not stream) its final content is sent as one
``text_delta``. Bookkeeping events (model requests, hooks, memory) map to nothing.

A top run that pauses for a person (a tool needing confirmation, input or
external execution) ends the stream with a ``Pause`` (tasks.pauses) instead of
a terminal payload; ``run_payloads(..., resume=<the paused run>)`` continues it
under the same run id.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, cast

from agno.agent import Agent
from agno.exceptions import redact_secrets
from agno.run import agent as agent_run
from agno.run import team as team_run
from agno.run import workflow as workflow_run
from agno.team import Team
from agno.workflow import Workflow
from pydantic import BaseModel

from runstream.db.events import TERMINAL_TYPES
from runstream.tasks.pauses import Pause, pause_of

Payload = dict[str, Any]
Runnable = Agent | Team | Workflow

COMPLETED: Payload = {"type": "done", "status": "completed"}
CANCELLED: Payload = {"type": "done", "status": "cancelled"}

# A team leader hands work to its members by calling these tools.
DELEGATION_TOOLS = ("delegate_task_to_member", "delegate_task_to_members")

CONTENT = (agent_run.RunContentEvent, team_run.RunContentEvent)
TOOL_STARTED = (agent_run.ToolCallStartedEvent, team_run.ToolCallStartedEvent)
TOOL_COMPLETED = (agent_run.ToolCallCompletedEvent, team_run.ToolCallCompletedEvent)
RUN_STARTED = (agent_run.RunStartedEvent, team_run.RunStartedEvent)
RUN_COMPLETED = (agent_run.RunCompletedEvent, team_run.RunCompletedEvent, workflow_run.WorkflowCompletedEvent)
RUN_ERROR = (agent_run.RunErrorEvent, team_run.RunErrorEvent, workflow_run.WorkflowErrorEvent)
RUN_CANCELLED = (agent_run.RunCancelledEvent, team_run.RunCancelledEvent, workflow_run.WorkflowCancelledEvent)


def error_payload(message: str) -> Payload:
    return {"type": "error", "message": message}


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, BaseModel):
        return content.model_dump_json()
    return json.dumps(content, default=str, ensure_ascii=False)


def structured(content: Any) -> Any:
    """A structured answer as JSON, or None for plain text."""
    if isinstance(content, BaseModel):
        return content.model_dump(mode="json")
    if isinstance(content, (dict, list)):
        return content
    return None


def tool_call_payload(tool: Any) -> Payload:
    return {
        "type": "tool_call",
        "tool_name": tool.tool_name or "",
        "argument": json.dumps(tool.tool_args or {}, ensure_ascii=False, default=str),
        "call_id": tool.tool_call_id,
    }


def tool_result_payload(tool: Any) -> Payload:
    payload: Payload = {
        "type": "tool_result",
        "call_id": tool.tool_call_id,
        "output": "" if tool.result is None else str(tool.result),
    }
    if tool.tool_call_error:
        # Additive: the tool raised, and its result is Agno's error text.
        payload["is_error"] = True
    return payload


def error_text(event: Any) -> str:
    """An error event's message (agents and teams say it in ``content``, workflows in ``error``)."""
    text = getattr(event, "error", None) or event.content or "run failed"
    # Provider messages sometimes echo credentials; the event log is read by browsers.
    return redact_secrets(str(text))


def member_name(event: Any) -> str:
    return event.agent_name or event.team_name or event.agent_id or event.team_id or "member"


class Translator:
    """Turns the events of one run (``run_id``) into payloads, in order."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.streamed_text = False
        self.sent_output = False

    def payloads(self, event: Any) -> list[Payload]:
        if isinstance(event, RUN_ERROR) and self._is_top(event):
            return [error_payload(error_text(event))]
        if isinstance(event, RUN_CANCELLED) and self._is_top(event):
            return [CANCELLED]
        if isinstance(event, workflow_run.BaseWorkflowRunOutputEvent):
            return self._workflow(event)
        if self._is_top(event):
            return self._top(event)
        return self._member(event)

    def _is_top(self, event: Any) -> bool:
        return getattr(event, "run_id", None) == self.run_id

    def _answer(self, content: Any) -> list[Payload]:
        """The top run's answer: text as ``text_delta``; structured output as
        ``output`` and its JSON text, so clients that only read text see it too."""
        value = structured(content)
        if value is not None:
            if self.sent_output:
                return []
            self.sent_output = True
            self.streamed_text = True
            return [{"type": "output", "content": value}, {"type": "text_delta", "delta": text_of(content)}]
        if content is None or content == "":
            return []
        self.streamed_text = True
        return [{"type": "text_delta", "delta": text_of(content)}]

    def _top(self, event: Any) -> list[Payload]:
        if isinstance(event, CONTENT):
            payloads = []
            if event.reasoning_content:
                payloads.append({"type": "reasoning", "text": event.reasoning_content})
            return payloads + self._answer(event.content)
        if isinstance(event, TOOL_STARTED) and event.tool is not None:
            if event.tool.tool_name in DELEGATION_TOOLS:
                args = event.tool.tool_args or {}
                return [
                    {
                        "type": "delegation",
                        "call_id": event.tool.tool_call_id,
                        "member": args.get("member_id"),
                        "task": str(args.get("task", "")),
                    }
                ]
            return [tool_call_payload(event.tool)]
        if isinstance(event, TOOL_COMPLETED) and event.tool is not None:
            if event.tool.tool_name in DELEGATION_TOOLS:
                return []  # the member's own member_completed carries what it answered
            return [tool_result_payload(event.tool)]
        if isinstance(event, RUN_COMPLETED) and not self.streamed_text:
            return self._answer(event.content)
        return []

    def _member(self, event: Any) -> list[Payload]:
        who = {"member": member_name(event), "run_id": event.run_id}
        if getattr(event, "step_name", None):
            who["step"] = event.step_name
        if isinstance(event, RUN_STARTED):
            return [{"type": "member_started", **who}]
        if isinstance(event, CONTENT) and event.content is not None and event.content != "":
            return [{"type": "member_delta", **who, "delta": text_of(event.content)}]
        if isinstance(event, TOOL_STARTED) and event.tool is not None:
            return [{**tool_call_payload(event.tool), "type": "member_tool_call", **who}]
        if isinstance(event, TOOL_COMPLETED) and event.tool is not None:
            return [{**tool_result_payload(event.tool), "type": "member_tool_result", **who}]
        if isinstance(event, RUN_COMPLETED):
            return [{"type": "member_completed", **who, "content": text_of(event.content or "")}]
        if isinstance(event, RUN_ERROR):
            return [{"type": "member_error", **who, "message": error_text(event)}]
        return []

    def _workflow(self, event: Any) -> list[Payload]:
        if event.nested_depth:
            return []  # a nested workflow's steps: its parent step's events stand for them
        if isinstance(event, workflow_run.StepStartedEvent):
            return [{"type": "step_started", "step": event.step_name, "index": event.step_index}]
        if isinstance(event, workflow_run.StepCompletedEvent):
            return [
                {
                    "type": "step_completed",
                    "step": event.step_name,
                    "index": event.step_index,
                    "content": text_of(event.content if event.content is not None else ""),
                }
            ]
        if isinstance(event, workflow_run.WorkflowCompletedEvent) and not self.streamed_text:
            return self._answer(event.content)
        return []


def is_terminal(payload: Payload) -> bool:
    return payload["type"] in TERMINAL_TYPES


def final_status(payload: Payload) -> str:
    """The job status a terminal payload ends the job in."""
    return "failed" if payload["type"] == "error" else payload["status"]


PAUSED_OUTPUTS = (agent_run.RunOutput, team_run.TeamRunOutput)


async def run_payloads(
    runnable: Runnable, input: Any, *, resume: Any = None, **run_options: Any
) -> AsyncIterator[Payload | Pause]:
    """Run the agent, team or workflow and yield its payloads; the last one is
    always terminal (``done``/completed when the stream ends without an error),
    or a ``Pause`` when the run waits for a person. ``resume``: a paused run
    (answered, see tasks.pauses) to continue instead of starting one."""
    run_id = resume.run_id if resume is not None else str(uuid.uuid4())
    translator = Translator(run_id)
    # The run's own output comes last (an agent's or team's): a paused one is kept.
    keep_output: dict[str, Any] = {} if isinstance(runnable, Workflow) else {"yield_run_output": True}
    started = (
        runnable.acontinue_run(run_response=resume, stream=True, stream_events=True, **keep_output, **run_options)
        if resume is not None
        else runnable.arun(input, stream=True, stream_events=True, run_id=run_id, **keep_output, **run_options)
    )
    # aclosing: leaving early (terminal payload, cancel) closes Agno's generator
    # now, so its cleanup runs in this task rather than whenever it is collected.
    # Agno declares an AsyncIterator; what it returns is an async generator, which has aclose().
    stream = cast(AsyncGenerator[Any, None], started)
    async with aclosing(stream) as events:
        async for event in events:
            if isinstance(event, PAUSED_OUTPUTS) and event.run_id == run_id and event.is_paused:
                yield pause_of(event)
                return
            for payload in translator.payloads(event):
                yield payload
                if is_terminal(payload):
                    return
    yield COMPLETED
