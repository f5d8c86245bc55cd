"""Celery configuration shared by the API (which only sends) and the worker,
and the one producer both of them publish with.

Both sides must agree on the broker and its transport options, so they are
derived here once from the settings.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from runstream.core import filesystem_transport
from runstream.core.settings import Settings

TASK_NAME = "runstream.run_job"
# One attempt at one webhook delivery (tasks/webhooks.py), by webhook id.
WEBHOOK_TASK_NAME = "runstream.deliver_webhook"

# One quick retry only: it replaces a pooled connection the broker dropped (a
# restart), while a broker that is really down fails fast. A publish that fails
# is never lost: the row stays due, and the reaper sends it again.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}

# kombu's filesystem transport, with whole-message writes (see the module).
TRANSPORT_ALIASES[filesystem_transport.SCHEME] = "runstream.core.filesystem_transport:Transport"


def broker_url(settings: Settings) -> str:
    """The broker Celery connects to. Unset, or ``filesystem://``: message files
    under the data dir (dev mode's default; no broker process)."""
    url = settings.celery_broker_url or "filesystem://"
    if url.startswith("filesystem://"):
        return f"{filesystem_transport.SCHEME}://"
    return url


def transport_options(settings: Settings) -> dict[str, Any]:
    url = broker_url(settings)
    if url.startswith(filesystem_transport.SCHEME):
        folder = (settings.data_dir / "broker").resolve()
        for sub in ("queue", "staging", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            # Messages are written here, then renamed into the queue folder.
            "staging_folder": str(folder / "staging"),
            "processed_folder": str(folder / "processed"),
            # The exchange table; kombu's default is relative to the working directory.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.02,
        }
    if url.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacknowledged message (its worker died) only after
        # this long. The job row is the truth anyway: the reaper re-dispatches.
        return {"visibility_timeout": settings.redis_visibility_timeout_s}
    return {}


def celery_config(settings: Settings) -> dict[str, Any]:
    url = broker_url(settings)
    return {
        "broker_url": url,
        # Celery reads CELERY_BROKER_URL from the environment itself, ahead of
        # broker_url, which would undo what broker_url() resolved (filesystem://
        # → Runstream's transport). It prefers these two over that variable.
        "broker_read_url": url,
        "broker_write_url": url,
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.queue,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Agent runs wait on models and tools, not CPU: many runs per process.
        "worker_pool": "threads",
        "worker_concurrency": settings.worker_concurrency,
        "worker_hijack_root_logger": False,
    }


class Producer:
    """Publishes Runstream's tasks by name, from a producer-only Celery app: the
    API never imports the task code, and the worker's reaper keeps its sends
    apart from the consumer connection, which is Celery's business and may be
    down. Publishing blocks (kombu is synchronous): callers run it in a thread,
    under a deadline of their own."""

    def __init__(self, name: str, settings: Settings):
        self._celery = Celery(name, set_as_current=False)
        self._celery.conf.update(celery_config(settings))
        # Give up on an unreachable broker within the callers' deadline.
        self._celery.conf.broker_connection_timeout = settings.dispatch_timeout_s
        self._timeout_s = settings.dispatch_timeout_s

    def publish(self, task_name: str, ref: str, countdown: float | None = None) -> None:
        """Send ``task_name(ref)`` with ``ref`` as its task id. Celery's producer
        pool keeps the broker connection between calls."""
        self._celery.send_task(
            task_name, args=[ref], task_id=ref, countdown=countdown, retry=True, retry_policy=PUBLISH_RETRY_POLICY
        )

    def connect(self) -> None:
        """Raises when the broker cannot be reached within the deadline (readiness)."""
        with self._celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=self._timeout_s)

    def close(self) -> None:
        self._celery.close()
