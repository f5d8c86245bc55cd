"""A support desk served by Runstream: one agent, one team, one workflow.

Run it (offline, from the repository root)::

    RUNSTREAM_AGENTS="support=examples.support_desk.agents:support_agent,desk=examples.support_desk.agents:support_team,triage=examples.support_desk.agents:triage_workflow" make dev

See examples/support_desk/README.md.
"""
