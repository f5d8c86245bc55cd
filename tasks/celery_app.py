"""The Celery app of the worker, and its one task: ``runstream.run_job(job_id)``.

Start a worker with ``runstream worker`` (extra options go to Celery), e.g.
``runstream worker -n w1@%h --concurrency 64``. The pool is threads (see
runstream.broker): each task thread hands its run to the process's event loop
(tasks.runtime) and blocks until the run ends.
"""

from __future__ import annotations

import logging
import random
import uuid
from typing import Any

from celery import Celery, Task
from celery.signals import setup_logging, worker_init, worker_shutdown
from prometheus_client import start_http_server

from runstream.broker import TASK_NAME, celery_config
from runstream.logs import configure_logging
from runstream.settings import Settings, get_settings
from tasks.run_job import run_job
from tasks.runtime import close_runtime, get_runtime

log = logging.getLogger("runstream.worker")

celery_app = Celery("runstream")
celery_app.conf.update(celery_config(get_settings()))


def retry_countdown(attempt: int, settings: Settings) -> float:
    """Exponential backoff with jitter before the attempt after ``attempt``: about
    base, 2·base, 4·base … capped, each scaled by a random factor in [0.5, 1) so
    jobs that failed together do not all come back together."""
    ceiling = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)


@celery_app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job_task(self: Task, job_id: str) -> None:
    try:
        job_uuid = uuid.UUID(job_id)
    except ValueError:
        log.error("run_job: %r is not a job id; message dropped", job_id)
        return
    runtime = get_runtime()
    outcome = runtime.run(run_job(runtime, job_uuid, worker=self.request.hostname or "worker"))
    if outcome.wants_retry:
        countdown = retry_countdown(outcome.attempt, runtime.settings)
        log.info("job %s: attempt %d in %.1fs", job_id, outcome.attempt + 1, countdown)
        # The job row, not Celery, counts attempts (settings.max_attempts): no Celery limit.
        raise self.retry(countdown=countdown, max_retries=None)


@worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    close_runtime()


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    # Connected: Celery leaves logging to Runstream's one setup (JSON lines).
    configure_logging(get_settings())


@worker_init.connect
def _start_metrics_exporter(**_: Any) -> None:
    # Appends happen here, so the append series are served here (runstream.metrics).
    port = get_settings().worker_metrics_port
    if port is not None:
        start_http_server(port)
        log.info("worker metrics on port %d", port)
