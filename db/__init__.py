"""The database layer: the only place that holds SQL. It imports neither api nor tasks."""
