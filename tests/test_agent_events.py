"""Agno events → payloads, in process: the error paths of teams and workflows
(the happy paths run through a real worker in tests/test_agents.py)."""

from __future__ import annotations

from agno.agent import Agent
from agno.run.agent import RunErrorEvent
from agno.run.workflow import WorkflowErrorEvent
from agno.team import Team

from runstream.tasks.agent_events import Translator, run_payloads
from runstream.tasks.offline_model import OfflineKnobs, OfflineModel


def test_a_top_level_error_of_any_kind_is_the_terminal_error() -> None:
    translator = Translator("run-1")
    assert translator.payloads(WorkflowErrorEvent(run_id="run-1", error="step broke")) == [
        {"type": "error", "message": "step broke"}
    ]
    assert translator.payloads(RunErrorEvent(run_id="run-1", content="model broke")) == [
        {"type": "error", "message": "model broke"}
    ]
    # Another run's error is a member's: not terminal.
    member = translator.payloads(RunErrorEvent(run_id="run-2", agent_name="m", content="model broke"))
    assert member == [{"type": "member_error", "member": "m", "run_id": "run-2", "message": "model broke"}]


async def test_a_failing_member_does_not_end_the_team_run() -> None:
    failing = Agent(name="m", model=OfflineModel(delay_ms=0, knobs=OfflineKnobs(fail="no")), telemetry=False)
    team = Team(name="t", members=[failing], model=OfflineModel(delay_ms=0), telemetry=False)
    payloads = [p async for p in run_payloads(team, "hello")]
    kinds = [p["type"] for p in payloads if p["type"] not in ("reasoning", "text_delta")]
    assert kinds == ["delegation", "member_started", "member_error", "done"]
    [error] = [p for p in payloads if p["type"] == "member_error"]
    assert (error["member"], error["message"]) == ("m", "no")
