"""The built-in assistant: the registry's default entry (``assistant``).

An ordinary factory, run through the same path as any user's agent: the job's
model spec (the offline model unless ``RUNSTREAM_MODEL`` says otherwise) and
Runstream's three demo tools.
"""

from __future__ import annotations

from agno.agent import Agent

from runstream.tasks.registry import AgentContext
from runstream.tasks.tools import TOOLS


def build_assistant(ctx: AgentContext) -> Agent:
    """The offline demo assistant: a calculator, a clock and a silent wait."""
    # telemetry=False: Agno would otherwise report every run to its own API.
    return Agent(name="assistant", model=ctx.build_model(), tools=list(TOOLS), telemetry=False)
