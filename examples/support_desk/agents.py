"""The desk's agents, as Runstream's registry serves them.

Each is a factory ``(ctx) -> Agent | Team | Workflow``: Runstream calls it for
every attempt of a job with the job's context (``AgentContext``: job id,
attempt, tenant, user, session id, message, metadata, model spec, history).
``ctx.build_model()`` is the job's model: the offline model unless
``RUNSTREAM_MODEL`` names a hosted one, so the example runs without a network.

Register them with::

    RUNSTREAM_AGENTS="support=examples.support_desk.agents:support_agent,desk=examples.support_desk.agents:support_team,triage=examples.support_desk.agents:triage_workflow"
"""

from __future__ import annotations

from agno.agent import Agent
from agno.team import Team
from agno.workflow import Step, Workflow

from examples.support_desk.tools import TOOLS, open_ticket, order_status
from runstream.tasks.registry import AgentContext


def instructions(ctx: AgentContext) -> list[str]:
    """The desk's house rules, with the customer's name when the job carries one."""
    rules = ["Be brief and friendly.", "Quote order numbers exactly."]
    customer = ctx.metadata.get("customer")
    if customer:
        rules.append(f"The customer's name is {customer}.")
    return rules


def support_agent(ctx: AgentContext) -> Agent:
    """One agent with the desk's two tools: order status and tickets."""
    return Agent(
        name="support",
        description="Answers order questions and opens tickets",
        model=ctx.build_model(),
        instructions=instructions(ctx),
        tools=list(TOOLS),
        telemetry=False,
    )


def support_team(ctx: AgentContext) -> Team:
    """A team: an orders specialist and a tickets specialist, and a leader who asks them."""
    orders = Agent(
        name="Orders",
        role="knows where every order is",
        model=ctx.build_model(),
        tools=[order_status],
        telemetry=False,
    )
    tickets = Agent(
        name="Tickets",
        role="opens tickets for problems",
        model=ctx.build_model(),
        tools=[open_ticket],
        telemetry=False,
    )
    return Team(
        name="desk",
        description="A leader who asks the orders and tickets specialists",
        members=[orders, tickets],
        model=ctx.build_model(),
        instructions=instructions(ctx),
        telemetry=False,
    )


def triage_workflow(ctx: AgentContext) -> Workflow:
    """A two-step workflow: look the request up, then write the reply."""
    lookup = Agent(name="lookup", model=ctx.build_model(), tools=[order_status], telemetry=False)
    reply = Agent(name="reply", model=ctx.build_model(), instructions=instructions(ctx), telemetry=False)
    return Workflow(
        name="triage",
        description="Look the request up, then write the reply",
        steps=[Step(name="lookup", agent=lookup), Step(name="reply", agent=reply)],
        telemetry=False,
    )
