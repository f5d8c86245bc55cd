"""The agent registry with a real worker and API: users' own agents, teams,
workflows and factories (tests/agents_fixture.py), chosen per job.

The module's worker and API serve a registry of their own on a queue of their
own (the session's worker serves the default registry only).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.support.custom_auth import SESSION_HEADER
from tests.support.processes import RUNSTREAM, ApiServer, ServiceProcess, start_api, start_worker
from tests.support.sse import deltakit_events, frames, read_stream

pytestmark = pytest.mark.asyncio(loop_scope="session")

FIXTURE = "tests.agents_fixture"
AGENTS = {
    "assistant": "runstream.tasks.assistant:build_assistant",
    "support": f"{FIXTURE}:support",
    "desk": f"{FIXTURE}:desk",
    "pipeline": f"{FIXTURE}:pipeline",
    "tailored": f"{FIXTURE}:tailored",
    "slow": f"{FIXTURE}:slow_support",
    "triage": f"{FIXTURE}:triage",
    "remembering": f"{FIXTURE}:remembering",
    "broken": f"{FIXTURE}:broken_factory",
    # The example project a user copies (examples/support_desk), as its README registers it.
    "example-support": "examples.support_desk.agents:support_agent",
    "example-desk": "examples.support_desk.agents:support_team",
    "example-triage": "examples.support_desk.agents:triage_workflow",
}


def registry(agents: dict[str, str]) -> str:
    return ",".join(f"{name}={path}" for name, path in agents.items())


@pytest.fixture(scope="module")
def agents_env(service_env: dict[str, str]) -> dict[str, str]:
    return {
        **service_env,
        "RUNSTREAM_QUEUE": service_env["RUNSTREAM_QUEUE"] + "-agents",
        "RUNSTREAM_AGENTS": registry(AGENTS),
        "RUNSTREAM_DEFAULT_AGENT": "support",
        # The host application's login names the tenant and the user (tests/support/custom_auth.py).
        "RUNSTREAM_AUTH": "tests.support.custom_auth:authenticate",
        # The API loads the authenticator from the repository (the worker imports
        # agents from its working directory by itself).
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }


@pytest.fixture(scope="module")
def agents_worker(agents_env: dict[str, str], log_dir: Path) -> Iterator[ServiceProcess]:
    worker = start_worker(agents_env, log_dir, "agents-worker")
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def agents_api(agents_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    api = start_api(agents_env, log_dir, "agents-api")
    yield api
    api.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def client(agents_api: ApiServer, agents_worker: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=agents_api.url, timeout=30.0, headers=as_user("ann")) as http:
        yield http


def as_user(user: str) -> dict[str, str]:
    return {SESSION_HEADER: f"agents/{user}"}


async def run(
    client: httpx.AsyncClient, message: str, headers: dict[str, str] | None = None, **body: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start a job, read its whole stream; answer the finished job and its payloads."""
    response = await client.post("/api/jobs", json={"message": message, **body}, headers=headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    stream = await read_stream(client, f"/api/jobs/{job_id}/events")
    payloads = deltakit_events(stream)
    assert [frame.id for frame in frames(stream)] == list(range(len(payloads)))
    assert [p["type"] for p in payloads].count("done") + [p["type"] for p in payloads].count("error") == 1
    return (await client.get(f"/api/jobs/{job_id}")).json(), payloads


def joined(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive deltas of one stream joined (text, or one member's run), run ids
    dropped (they are random): what the payloads say, not how they were cut."""
    out: list[dict[str, Any]] = []
    for payload in payloads:
        payload = {k: v for k, v in payload.items() if k != "run_id"}
        last = out[-1] if out else None
        if (
            last is not None
            and payload["type"] in ("text_delta", "member_delta")
            and last["type"] == payload["type"]
            and last.get("member") == payload.get("member")
        ):
            last["delta"] += payload["delta"]
        else:
            out.append(payload)
    return out


def answer(payloads: list[dict[str, Any]]) -> str:
    return "".join(p["delta"] for p in payloads if p["type"] == "text_delta")


async def test_the_agent_list_comes_from_the_settings_and_the_worker_record(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/agents")).json()
    assert body["default"] == "support"
    listed = {a["name"]: (a["kind"], a["description"], a["default"]) for a in body["agents"]}
    assert list(listed) == list(AGENTS)
    assert listed["assistant"] == (
        "agent",
        "The offline demo assistant: a calculator, a clock and a silent wait.",
        False,
    )
    assert listed["support"] == ("agent", "Answers order questions with its own tools", True)
    assert listed["desk"] == ("team", "Two members, one leader", False)
    assert listed["pipeline"] == ("workflow", "Draft, then review", False)
    assert listed["tailored"] == ("agent", "An agent whose instructions follow the job's metadata.", False)
    assert listed["broken"] == ("factory", None, False)


async def test_a_custom_agent_calls_its_own_tools(client: httpx.AsyncClient) -> None:
    (job, sync_tool), (_, async_tool), (_, toolkit), (_, raising) = await asyncio.gather(
        run(client, "please lookup_order 42", agent="support"),
        run(client, "refund_order 42", agent="support"),
        run(client, "stock_level AB-1", agent="support"),
        run(client, "explode now", agent="support"),
    )
    assert job["agent"] == "support" and job["status"] == "completed"
    assert [p for p in joined(sync_tool) if p["type"] not in ("reasoning",)] == [
        {"type": "text_delta", "delta": "Let me use lookup_order."},
        {"type": "tool_call", "tool_name": "lookup_order", "argument": '{"order_id": "42"}', "call_id": "call_1"},
        {"type": "tool_result", "call_id": "call_1", "output": "order 42 shipped on Monday"},
        {"type": "text_delta", "delta": "The lookup_order tool answered: order 42 shipped on Monday."},
        {"type": "done", "status": "completed"},
    ]
    for payloads, name, output in (
        (async_tool, "refund_order", "order 42 refunded"),
        (toolkit, "stock_level", "AB-1: 7 in stock"),
    ):
        [call] = [p for p in payloads if p["type"] == "tool_call"]
        [result] = [p for p in payloads if p["type"] == "tool_result"]
        assert (call["tool_name"], result["output"]) == (name, output)
        assert answer(payloads).endswith(f"The {name} tool answered: {output}.")
    # A tool that raises: Agno's error result, marked, and the run goes on to its answer.
    [result] = [p for p in raising if p["type"] == "tool_result"]
    assert result == {
        "type": "tool_result",
        "call_id": "call_1",
        "output": "the warehouse is on fire (now)",
        "is_error": True,
    }
    assert answer(raising).endswith("The explode tool answered: the warehouse is on fire (now).")
    assert raising[-1] == {"type": "done", "status": "completed"}


async def test_a_team_streams_its_members_and_the_leaders_answer(client: httpx.AsyncClient) -> None:
    job, payloads = await run(client, "lookup_order 7", agent="desk")
    billing = "Let me use lookup_order.The lookup_order tool answered: order 7 shipped on Monday."
    events = [p for p in joined(payloads) if p["type"] != "reasoning"]
    member_events = [p for p in events if p["type"] not in ("text_delta", "done")]
    shipping = next(p["content"] for p in events if p["type"] == "member_completed" and p["member"] == "Shipping")
    assert member_events == [
        {"type": "delegation", "call_id": "call_1", "member": "billing", "task": "lookup_order 7"},
        {"type": "member_started", "member": "Billing"},
        {"type": "member_delta", "member": "Billing", "delta": "Let me use lookup_order."},
        {
            "type": "member_tool_call",
            "member": "Billing",
            "tool_name": "lookup_order",
            "argument": '{"order_id": "7"}',
            "call_id": "call_1",
        },
        {"type": "member_tool_result", "member": "Billing", "call_id": "call_1", "output": "order 7 shipped on Monday"},
        {
            "type": "member_delta",
            "member": "Billing",
            "delta": "The lookup_order tool answered: order 7 shipped on Monday.",
        },
        {"type": "member_completed", "member": "Billing", "content": billing},
        {"type": "delegation", "call_id": "call_2", "member": "shipping", "task": "lookup_order 7"},
        {"type": "member_started", "member": "Shipping"},
        {"type": "member_delta", "member": "Shipping", "delta": shipping},
        {"type": "member_completed", "member": "Shipping", "content": shipping},
    ]
    assert shipping.startswith("You said: lookup_order 7 Here is the offline answer:")
    # The answer the user reads is the leader's, and only the leader's.
    assert (
        answer(payloads)
        == f"Let me ask billing.Let me ask shipping.billing answered: {billing} shipping answered: {shipping}"
    )
    assert job["status"] == "completed" and payloads[-1] == {"type": "done", "status": "completed"}


async def test_a_workflow_streams_its_steps(client: httpx.AsyncClient) -> None:
    job, payloads = await run(client, "lookup_order 9", agent="pipeline")
    draft = "Let me use lookup_order.The lookup_order tool answered: order 9 shipped on Monday."
    events = [p for p in joined(payloads) if p["type"] not in ("reasoning", "member_delta")]
    review = next(p["content"] for p in events if p["type"] == "step_completed" and p["step"] == "review")
    assert events == [
        {"type": "step_started", "step": "draft", "index": 0},
        {"type": "member_started", "member": "drafter", "step": "draft"},
        {
            "type": "member_tool_call",
            "member": "drafter",
            "step": "draft",
            "tool_name": "lookup_order",
            "argument": '{"order_id": "9"}',
            "call_id": "call_1",
        },
        {
            "type": "member_tool_result",
            "member": "drafter",
            "step": "draft",
            "call_id": "call_1",
            "output": "order 9 shipped on Monday",
        },
        {"type": "member_completed", "member": "drafter", "step": "draft", "content": draft},
        {"type": "step_completed", "step": "draft", "index": 0, "content": draft},
        {"type": "step_started", "step": "review", "index": 1},
        {"type": "member_started", "member": "reviewer", "step": "review"},
        {"type": "member_completed", "member": "reviewer", "step": "review", "content": review},
        {"type": "step_completed", "step": "review", "index": 1, "content": review},
        # The workflow's output is the answer: the last step's.
        {"type": "text_delta", "delta": review},
        {"type": "done", "status": "completed"},
    ]
    assert review.startswith("You said: Let me use lookup_order.The lookup_order tool answered:")
    assert job["status"] == "completed"


async def test_a_factory_reads_the_jobs_context(client: httpx.AsyncClient) -> None:
    (pirate_job, pirate), (_, plain) = await asyncio.gather(
        run(client, "what are your instructions?", agent="tailored", metadata={"tone": "pirate"}),
        run(client, "what are your instructions?", as_user("bob"), agent="tailored"),
    )
    assert answer(pirate) == "My instructions are: - Answer in a pirate tone. - The user is ann."
    assert answer(plain) == "My instructions are: - Answer in a plain tone. - The user is bob."
    assert (pirate_job["agent"], pirate_job["user_id"]) == ("tailored", "ann")


async def test_structured_output_is_an_event_and_kept_on_the_job(client: httpx.AsyncClient) -> None:
    job, payloads = await run(client, "my printer is broken", agent="triage")
    [output] = [p for p in payloads if p["type"] == "output"]
    content = output["content"]
    assert set(content) == {"summary", "words", "urgent"}
    assert content["summary"].startswith("You said: my printer is broken Here is the offline answer:")
    assert (content["words"], content["urgent"]) == (30, True)
    # Clients that read text only get the same answer as JSON text.
    assert json.loads(answer(payloads)) == content
    assert job["output"] == content and job["status"] == "completed"


async def test_history_reaches_a_custom_agent(client: httpx.AsyncClient) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    await run(client, "my order is 42", agent="support", session_id=session)
    _, payloads = await run(client, "what did I say?", agent="support", session_id=session)
    assert answer(payloads) == 'You said: "my order is 42"'


async def test_an_agent_with_its_own_db_gets_the_session_and_user(client: httpx.AsyncClient) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    # The user is the authenticated one's: a user id in the body's metadata changes nothing.
    _, first = await run(client, "whoami", agent="remembering", session_id=session, metadata={"user_id": "mallory"})
    [result] = [p for p in first if p["type"] == "tool_result"]
    assert result["output"] == f"session={session} user=ann"
    # Its history is Agno's own (Runstream adds none to an agent with a db), under the same session.
    _, second = await run(client, "what did I say?", agent="remembering", session_id=session)
    assert answer(second) == 'You said: "whoami"'


async def test_a_job_without_an_agent_runs_the_default(client: httpx.AsyncClient) -> None:
    job, payloads = await run(client, "please lookup_order 5")
    assert job["agent"] == "support"
    assert answer(payloads).endswith("The lookup_order tool answered: order 5 shipped on Monday.")


async def test_an_unknown_agent_is_a_422_naming_the_agents(client: httpx.AsyncClient) -> None:
    names = ", ".join(AGENTS)
    for path in ("/api/jobs", "/api/chat-agno-background-task/jobs"):
        response = await client.post(path, json={"message": "hi", "agent": "nobody"})
        assert response.status_code == 422
        assert response.json() == {
            "error": {"code": "unknown_agent", "message": f"unknown agent 'nobody': this deployment serves {names}"}
        }
    # The recipe alias takes the agent from startBody too.
    response = await client.post("/api/chat-agno-background-task/jobs", json={"message": "hi", "agent": "desk"})
    assert response.status_code == 202 and response.json()["agent"] == "desk"


async def test_a_factory_that_builds_no_agent_fails_its_job(client: httpx.AsyncClient) -> None:
    job, payloads = await run(client, "hi", agent="broken")
    message = "agent 'broken': its factory returned str, not an Agno Agent, Team or Workflow"
    assert payloads == [{"type": "error", "message": message}]
    assert (job["status"], job["error"]) == ("failed", message)


async def test_jobs_and_analytics_by_agent(client: httpx.AsyncClient) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    await asyncio.gather(
        run(client, "hello", agent="support", session_id=session),
        run(client, "hello again", agent="support", session_id=session),
        run(client, "hello", agent="pipeline", session_id=session),
    )
    listed = (await client.get("/api/jobs", params={"session_id": session, "agent": "support"})).json()["jobs"]
    assert sorted(j["message"] for j in listed) == ["hello", "hello again"]
    assert {j["agent"] for j in listed} == {"support"}
    summary = (await client.get("/api/analytics/summary", params={"session_id": session})).json()
    assert [(a["agent"], a["jobs"], a["completed"]) for a in summary["by_agent"]] == [
        ("support", 2, 2),
        ("pipeline", 1, 1),
    ]
    only = (await client.get("/api/analytics/summary", params={"session_id": session, "agent": "pipeline"})).json()
    assert (only["agent"], only["jobs"]) == ("pipeline", 1)


async def test_the_example_support_desk(client: httpx.AsyncClient) -> None:
    shipped = "order 1001 (espresso machine) is shipped on Monday, arriving Thursday"
    (_, agent), (_, rules), (_, team), (_, workflow), (_, ticket) = await asyncio.gather(
        run(client, "order_status 1001", agent="example-support"),
        run(client, "what are your instructions?", agent="example-support", metadata={"customer": "Ann"}),
        run(client, "order_status 1001", agent="example-desk"),
        run(client, "order_status 1001", agent="example-triage"),
        run(client, "open_ticket grinder is noisy", agent="example-support"),
    )
    assert answer(agent) == f"Let me use order_status.The order_status tool answered: {shipped}."
    assert answer(rules) == (
        "My instructions are: Answers order questions and opens tickets - Be brief and friendly."
        " - Quote order numbers exactly. - The customer's name is Ann."
    )
    [result] = [p for p in ticket if p["type"] == "tool_result"]
    assert result["output"].startswith("ticket #") and result["output"].endswith(" opened: grinder is noisy")
    # The team: the leader asks both specialists; the orders one uses its tool.
    assert [(p["type"], p.get("member")) for p in team if p["type"] in ("delegation", "member_started")] == [
        ("delegation", "orders"),
        ("member_started", "Orders"),
        ("delegation", "tickets"),
        ("member_started", "Tickets"),
    ]
    [call] = [p for p in team if p["type"] == "member_tool_result"]
    assert (call["member"], call["output"]) == ("Orders", shipped)
    assert answer(team).startswith("Let me ask orders.Let me ask tickets.orders answered: Let me use order_status.")
    # The workflow: two steps, the lookup's answer feeding the reply.
    steps = [(p["type"], p["step"]) for p in workflow if p["type"].startswith("step_")]
    assert steps == [
        ("step_started", "lookup"),
        ("step_completed", "lookup"),
        ("step_started", "reply"),
        ("step_completed", "reply"),
    ]
    assert answer(workflow).startswith("You said: Let me use order_status.The order_status tool answered:")
    for payloads in (agent, rules, team, workflow, ticket):
        assert payloads[-1] == {"type": "done", "status": "completed"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "x=tests.no_such_module:agent",
            "agent 'x': cannot import 'tests.no_such_module' (No module named 'tests.no_such_module')",
        ),
        (f"x={FIXTURE}:no_such_agent", f"agent 'x': '{FIXTURE}' has no attribute 'no_such_agent'"),
        (
            f"x={FIXTURE}:NOT_AN_AGENT",
            f"agent 'x': {FIXTURE}:NOT_AN_AGENT is a str, not an Agno Agent, Team, Workflow or a factory (ctx) -> one of them",
        ),
    ],
)
async def test_a_worker_with_a_bad_entry_does_not_start(service_env: dict[str, str], entry: str, message: str) -> None:
    env = {**service_env, "RUNSTREAM_AGENTS": f"assistant=runstream.tasks.assistant:build_assistant,{entry}"}
    command = [RUNSTREAM, "worker"]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == f"runstream: RUNSTREAM_AGENTS: {message}"
    assert " ready." not in done.stdout + done.stderr
