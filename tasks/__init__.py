"""The worker side: Celery task, Agno agent runs, and the batched event writer.

Imports ``db`` and ``runstream``; nothing imports ``tasks`` except the worker
command (the API dispatches by task name).
"""
