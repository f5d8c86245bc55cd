"""Tools that wait for a person, and the agent that uses them.

Agno pauses a run before a tool declared with one of these flags; Runstream
keeps the paused run in Postgres, shows the request on the stream
(``input_required``) and continues the run when someone answers it
(``POST /api/jobs/{id}/continue``), on any worker, hours later if need be:

* ``issue_refund``: ``requires_confirmation``: a manager approves or rejects it;
* ``schedule_callback``: ``requires_user_input``: the person types the phone number;
* ``escalate_to_human``: ``external_execution``: someone does it outside and
  answers with what came of it.

Register them with ``refunds=examples.support_desk.approvals:refunds_agent`` and
``refunds-desk=examples.support_desk.approvals:refunds_desk`` (a team whose
member's refunds wait the same way).
"""

from __future__ import annotations

from agno.agent import Agent
from agno.team import Team
from agno.tools import tool

from examples.support_desk.data import ORDERS
from examples.support_desk.tools import order_status
from runstream.tasks.registry import AgentContext


@tool(requires_confirmation=True)
def issue_refund(order_number: str) -> str:
    """Refund an order in full. A manager must approve it first.

    Args:
        order_number: the order's number, e.g. "1001".
    """
    order = ORDERS.get(order_number.strip().lstrip("#"))
    if order is None:
        return f"there is no order {order_number}"
    return f"refunded order {order.number} ({order.item})"


@tool(requires_user_input=True, user_input_fields=["phone"])
def schedule_callback(reason: str, phone: str) -> str:
    """Book a call back from the desk. The customer gives the phone number.

    Args:
        reason: what the call is about.
        phone: the number to call.
    """
    return f"call back booked to {phone} about {reason}"


@tool(external_execution=True)
def escalate_to_human(summary: str) -> str:
    """Hand the case to a person on the desk, who answers with what they did.

    Args:
        summary: the case in one line.
    """
    raise NotImplementedError("a person runs this one; the run continues with their answer")


APPROVAL_TOOLS = [issue_refund, schedule_callback, escalate_to_human]


def refunds_agent(ctx: AgentContext) -> Agent:
    """Refunds, call backs and escalations: each waits for a person."""
    return Agent(
        name="refunds",
        description="Issues refunds (a manager approves), books call backs, escalates",
        model=ctx.build_model(),
        tools=[order_status, *APPROVAL_TOOLS],
        telemetry=False,
    )


def refunds_desk(ctx: AgentContext) -> Team:
    """A team: the leader hands refunds to the refunds agent, whose calls wait for a person."""
    return Team(
        name="refunds-desk",
        description="A leader and a refunds specialist whose refunds a manager approves",
        members=[refunds_agent(ctx)],
        model=ctx.build_model(),
        telemetry=False,
    )
