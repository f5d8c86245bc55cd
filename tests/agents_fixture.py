"""The agents module of the registry tests: what a user's own module looks like.

The worker of tests/test_agents.py serves these through
``RUNSTREAM_AGENTS=name=tests.agents_fixture:attribute,...``. Every model is the
offline one, so the rules of tasks/offline_model.py decide what each says.
"""

from __future__ import annotations

import asyncio

from agno.agent import Agent
from agno.db.in_memory import InMemoryDb
from agno.run.base import RunContext
from agno.team import Team
from agno.tools import Toolkit
from agno.workflow import Step, Workflow
from pydantic import BaseModel

from runstream.tasks.offline_model import OfflineModel
from runstream.tasks.registry import AgentContext


def offline() -> OfflineModel:
    return OfflineModel(delay_ms=0)


def lookup_order(order_id: str) -> str:
    """Look up an order's status.

    Args:
        order_id: the order's number, e.g. "42".
    """
    return f"order {order_id} shipped on Monday"


async def refund_order(order_id: str) -> str:
    """Refund an order.

    Args:
        order_id: the order's number.
    """
    await asyncio.sleep(0)
    return f"order {order_id} refunded"


def explode(reason: str) -> str:
    """A tool that always fails.

    Args:
        reason: why.
    """
    raise RuntimeError(f"the warehouse is on fire ({reason})")


class Inventory(Toolkit):
    def __init__(self) -> None:
        super().__init__(name="inventory", tools=[self.stock_level])

    def stock_level(self, sku: str) -> str:
        """How many of an item are in stock.

        Args:
            sku: the item's code.
        """
        return f"{sku}: 7 in stock"


def whoami(run_context: RunContext) -> str:
    """Say which session and user this run belongs to."""
    return f"session={run_context.session_id} user={run_context.user_id}"


support = Agent(
    name="support",
    description="Answers order questions with its own tools",
    model=offline(),
    tools=[lookup_order, refund_order, explode, Inventory()],
    telemetry=False,
)

billing = Agent(
    name="Billing", role="answers billing questions", model=offline(), tools=[lookup_order], telemetry=False
)
shipping = Agent(name="Shipping", role="answers shipping questions", model=offline(), telemetry=False)
desk = Team(
    name="desk", description="Two members, one leader", members=[billing, shipping], model=offline(), telemetry=False
)

drafter = Agent(name="drafter", model=offline(), tools=[lookup_order], telemetry=False)
reviewer = Agent(name="reviewer", model=offline(), telemetry=False)
pipeline = Workflow(
    name="pipeline",
    description="Draft, then review",
    steps=[Step(name="draft", agent=drafter), Step(name="review", agent=reviewer)],
    telemetry=False,
)


class Ticket(BaseModel):
    summary: str
    words: int
    urgent: bool = False


triage = Agent(name="triage", model=offline(), output_schema=Ticket, telemetry=False)

# Agno keeps this agent's sessions itself: Runstream passes the session and user ids.
remembering = Agent(
    name="remembering",
    model=offline(),
    db=InMemoryDb(),
    add_history_to_context=True,
    tools=[whoami],
    telemetry=False,
)


def tailored(ctx: AgentContext) -> Agent:
    """An agent whose instructions follow the job's metadata."""
    tone = ctx.metadata.get("tone", "plain")
    return Agent(
        model=ctx.build_model(),
        instructions=[f"Answer in a {tone} tone.", f"The user is {ctx.user or 'anonymous'}."],
        telemetry=False,
    )


async def slow_support(ctx: AgentContext) -> Agent:
    """The support agent on the job's model (its metadata.offline knobs apply)."""
    await asyncio.sleep(0)
    return Agent(name="slow-support", model=ctx.build_model(), tools=[lookup_order], telemetry=False)


def broken_factory(ctx: AgentContext) -> str:
    return "not an agent"


NOT_AN_AGENT = "a string"
