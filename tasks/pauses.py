"""Runs that wait for a person: Agno's paused runs as Runstream sees them.

A tool declared with ``requires_confirmation``, ``requires_user_input`` or
``external_execution`` pauses an Agno run before it executes. Runstream then
appends ``{"type": "input_required", "requirements": [...]}`` (one entry per
outstanding requirement, see ``requirement_json``), keeps the paused run on the
job row (``RunOutput.to_dict()``: messages, tool calls, requirements) and frees
the worker. The API checks a person's answers against those entries
(api.continuation); a worker then rebuilds the run from the row, applies the
answers (``answer_run``) and continues it with Agno's ``acontinue_run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agno.run.agent import RunOutput
from agno.run.requirement import RunRequirement
from agno.run.team import TeamRunOutput

if TYPE_CHECKING:
    from runstream.tasks.agent_events import Payload, Runnable

# What a requirement asks of a person (the ``kind`` of an ``input_required`` entry).
CONFIRMATION = "confirmation"
USER_INPUT = "user_input"
EXTERNAL_EXECUTION = "external_execution"


@dataclass(frozen=True)
class Pause:
    """How a run attempt ended when a tool needs a person: the ``input_required``
    payload to append, and the paused Agno run to keep."""

    payload: dict[str, Any]
    run: dict[str, Any]


def kind_of(requirement: RunRequirement) -> str | None:
    if requirement.needs_external_execution:
        return EXTERNAL_EXECUTION
    if requirement.needs_user_input:
        return USER_INPUT
    if requirement.needs_confirmation:
        return CONFIRMATION
    return None  # resolved, or a kind Runstream does not ask for (user feedback)


def requirement_json(requirement: RunRequirement) -> Payload:
    """One requirement as clients see it: its id, kind, the tool call it stops, the
    team member it stops (a team's), and for user input the fields still to fill
    (name, type, description)."""
    tool = requirement.tool_execution
    kind = kind_of(requirement)
    entry: Payload = {
        "id": requirement.id,
        "kind": kind,
        "tool_name": tool.tool_name if tool else None,
        "tool_args": (tool.tool_args or {}) if tool else {},
        "call_id": tool.tool_call_id if tool else None,
    }
    if requirement.member_agent_id is not None:
        # A team member's tool: the member whose run waits.
        entry["member"] = requirement.member_agent_name or requirement.member_agent_id
    if kind == USER_INPUT:
        entry["fields"] = [
            {"name": f.name, "type": f.to_dict()["field_type"], "description": f.description}
            for f in requirement.user_input_schema or []
            if f.value is None
        ]
    return entry


def pause_of(output: RunOutput | TeamRunOutput) -> Pause:
    outstanding = [r for r in output.requirements or [] if kind_of(r) is not None]
    payload = {"type": "input_required", "requirements": [requirement_json(r) for r in outstanding]}
    return Pause(payload, output.to_dict())


def restore_run(runnable: Runnable, stored: dict[str, Any]) -> RunOutput | TeamRunOutput:
    """The paused run a job kept, rebuilt for ``runnable`` (an agent, or a team)."""
    output = (TeamRunOutput if hasattr(runnable, "members") else RunOutput).from_dict(stored)
    # Requirements rebuilt from storage hold copies of the run's tool calls; they
    # must be the run's own, so answering a requirement updates the call Agno resumes.
    calls = {tool.tool_call_id: tool for tool in output.tools or []}
    for requirement in output.requirements or []:
        # A team member's call is in the member's run, not among the leader's calls.
        if requirement.tool_execution is not None and requirement.member_agent_id is None:
            requirement.tool_execution = calls.get(requirement.tool_execution.tool_call_id, requirement.tool_execution)
    return output


def answer_run(output: RunOutput | TeamRunOutput, answers: list[dict[str, Any]]) -> None:
    """Apply a person's answers (checked by the API against the same requirements)."""
    by_id = {requirement.id: requirement for requirement in output.requirements or []}
    for answer in answers:
        requirement = by_id[answer["id"]]
        if answer["kind"] == CONFIRMATION:
            if answer["confirmed"]:
                requirement.confirm()
            else:
                requirement.reject(answer.get("note"))
        elif answer["kind"] == USER_INPUT:
            requirement.provide_user_input(answer["values"])
        else:
            requirement.set_external_execution_result(answer["result"])
