"""``GET /api/agents``: the agents this deployment serves.

Names come from the settings (RUNSTREAM_AGENTS), so the API never imports agent
code; kind and description come from what a worker recorded at start-up for
the same import path (db.agents). Until a worker has, they are null.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from runstream.db.agents import recorded_agents


async def list_agents(request: Request) -> JSONResponse:
    """The agents jobs may name, the default first among equals."""
    settings = request.app.state.settings
    paths = settings.agent_paths
    records = await recorded_agents(request.app.state.pool, list(paths))
    agents = []
    for name, path in paths.items():
        # A record of another import path describes an agent this deployment no longer serves.
        record = records.get(name) or {}
        known = record.get("import_path") == path
        agents.append(
            {
                "name": name,
                "kind": record["kind"] if known else None,
                "description": record["description"] if known else None,
                "default": name == settings.default_agent_name,
            }
        )
    return JSONResponse({"agents": agents, "default": settings.default_agent_name})
