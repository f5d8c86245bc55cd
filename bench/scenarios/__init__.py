"""One module per scenario; each ``run(bench)`` returns ``(scenario, targets)``."""

# In the order ``runstream bench`` runs them (``--only`` picks among these names).
SCENARIO_NAMES = ("delivery", "ingest", "fanout", "replay", "job_start", "retention")
