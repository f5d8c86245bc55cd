"""The Celery app of the worker, and its tasks: ``runstream.run_job(job_id)`` and
``runstream.deliver_webhook(webhook_id)``.

Start a worker with ``runstream worker`` (extra options go to Celery), e.g.
``runstream worker -n w1@%h --concurrency 64``. The pool is threads (see
runstream.core.broker): each task thread hands its run to the process's event loop
(tasks.runtime) and blocks until the run ends.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from celery.signals import (
    setup_logging,
    worker_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from prometheus_client import start_http_server

from runstream.core.broker import TASK_NAME, WEBHOOK_TASK_NAME, celery_config
from runstream.core.logs import configure_logging
from runstream.core.settings import get_settings
from runstream.tasks.run_job import run_job
from runstream.tasks.runtime import close_runtime, get_runtime, started_runtime
from runstream.tasks.webhooks import deliver_webhook

log = logging.getLogger("runstream.worker")

celery_app = Celery("runstream")
# Read when the worker starts (Celery's first look at its configuration), not on
# import: the settings are checked before, and importing reads no environment.
celery_app.add_defaults(lambda: celery_config(get_settings()))


@celery_app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job_task(self: Task, job_id: str) -> None:
    try:
        job_uuid = uuid.UUID(job_id)
    except ValueError:
        log.error("run_job: %r is not a job id; message dropped", job_id)
        return
    runtime = get_runtime()
    outcome = runtime.run(run_job(runtime, job_uuid, worker=self.request.hostname or "worker"))
    if outcome.status == "declined":
        # Back to the broker as it came (acks_late: not yet acknowledged), for
        # the next worker; the job row is untouched.
        raise Reject("worker shutting down", requeue=True)
    if outcome.wants_retry:
        log.info("job %s: attempt %d in %.1fs", job_id, outcome.attempt + 1, outcome.countdown)
        # The job row, not Celery, counts attempts (settings.max_attempts): no Celery limit.
        # The row already says when the retry is due (available_at): if this message
        # is lost, the reaper sends another once it is overdue.
        raise self.retry(countdown=outcome.countdown, max_retries=None)


@celery_app.task(name=WEBHOOK_TASK_NAME)
def deliver_webhook_task(webhook_id: str) -> None:
    # Handed to the event loop and not waited for: a slow receiver must not hold
    # a task slot that a run could use. The delivery row is the truth: an
    # attempt lost with its worker is sent again by the reaper once overdue.
    runtime = get_runtime()
    runtime.submit(deliver_webhook(runtime, webhook_id))


@worker_ready.connect
def _start_runtime(**_: Any) -> None:
    # At once, not with the first task: the reaper (tasks.reaper) must run on a
    # worker that no message reaches, since that is when it is needed.
    try:
        get_runtime()
    except Exception:
        log.exception("worker runtime did not start; the first task will try again")


@worker_shutting_down.connect
def _hand_back_runs(**_: Any) -> None:
    # Warm shutdown (SIGTERM): Celery stops consuming and waits for the running
    # tasks. Each run is handed back instead of finished (runs can be long; a
    # deploy waits seconds): its events so far are flushed, the job goes back to
    # pending and is sent again at once (see run_job_task), so another worker
    # takes it with a ``retry`` event without waiting for a stale heartbeat.
    runtime = started_runtime()
    if runtime is not None:
        runtime.hand_back()


@worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    close_runtime()


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    # Connected: Celery leaves logging to Runstream's one setup (JSON lines).
    configure_logging(get_settings())


@worker_init.connect
def _start_metrics_exporter(**_: Any) -> None:
    # Appends happen here, so the append series are served here (runstream.core.metrics).
    port = get_settings().worker_metrics_port
    if port is not None:
        start_http_server(port)
        log.info("worker metrics on port %d", port)
