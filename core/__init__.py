"""The ground floor: what every other floor stands on, and which imports none of them.

Settings (the one settings module), logging, Prometheus metrics, the broker's
configuration with the one Celery ``Producer``, and the small pure pieces they
need (durations, the webhook destination check, the filesystem broker).
"""
