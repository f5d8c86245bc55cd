"""``runstream bench``: Runstream's real path measured side by side with its baselines.

Each scenario lives in ``bench/scenarios/``; ``bench.main`` runs them in one go
against a database it creates (and drops) on the ``DATABASE_URL`` server.
"""
