"""Prometheus series, shared by the processes that produce them.

Where each comes from (docs/operations.md):

* ``runstream_jobs{status}`` — the API, at scrape time, with one GROUP BY on
  ``jobs`` (kept small by retention);
* ``runstream_events_appended_total``, ``runstream_append_seconds`` — measured in
  ``db.events.append_many``, where the worker writes every flush: the worker
  serves them on its own exporter (``RUNSTREAM_WORKER_METRICS_PORT``);
* ``runstream_open_streams`` — the API, from its event hub at scrape time;
* ``runstream_delivery_lag_seconds`` — the API: now − the event's created_at when
  the hub hands it to live streams (replayed history is not lag, so it is not counted);
* ``runstream_hub_reads_total`` — the API: reads of the log its hub made for live
  streams (rows that came in their commit's NOTIFY need none).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS = Gauge("runstream_jobs", "Jobs in the database, by status", ["status"])
EVENTS_APPENDED = Counter("runstream_events_appended", "Events appended to the log by this process")
APPEND_SECONDS = Histogram(
    "runstream_append_seconds",
    "Time of one append transaction (a flush: one commit, one NOTIFY)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
OPEN_STREAMS = Gauge("runstream_open_streams", "SSE streams open on this API process")
DELIVERY_LAG = Histogram(
    "runstream_delivery_lag_seconds",
    "From an event's commit to the hub handing it to this process's live streams",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HUB_READS = Counter(
    "runstream_hub_reads",
    "Reads of the event log the hub made for live streams (rows that came in their NOTIFY need none)",
)
