"""One module per scenario; each ``run(bench)`` returns ``(scenario, targets)``."""
