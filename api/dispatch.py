"""Hand a job to the workers: publish ``runstream.run_job`` by name.

The API never imports the task code; the shared producer (runstream.core.broker)
publishes by name. Publishing blocks (kombu is synchronous), so it runs in a
small dedicated thread pool under a deadline: a
slow or dead broker costs a request at most ``dispatch_timeout_s``. A publish
that fails leaves the job pending in Postgres, where the reaper finds it and
dispatches it again, so the API logs the failure and answers 202 anyway.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

from runstream.core.broker import TASK_NAME, WEBHOOK_TASK_NAME, Producer
from runstream.core.settings import Settings
from runstream.db.jobs import Followups

log = logging.getLogger(__name__)

# Publishes in flight at once; more wait their turn (each is bounded by the deadline).
PUBLISH_THREADS = 4


class Dispatcher:
    def __init__(self, settings: Settings):
        self.timeout = settings.dispatch_timeout_s
        self.producer = Producer("runstream-api", settings)
        self.threads = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="dispatch")

    async def _send(self, task_name: str, ref: str) -> bool:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.run_in_executor(self.threads, self.producer.publish, task_name, ref), self.timeout
            )
        except Exception as exc:  # noqa: BLE001 - any broker failure means the same: stay pending
            log.warning("dispatch of %s %s failed, it stays pending for the reaper: %r", task_name, ref, exc)
            return False
        return True

    async def dispatch(self, job_id: uuid.UUID) -> bool:
        """True when the broker took the message; False leaves the job to the reaper."""
        return await self._send(TASK_NAME, str(job_id))

    async def send_followups(self, followups: Followups) -> None:
        """Send what ended jobs left to do (their sessions' next runs, their
        webhooks); what fails to send is the reaper's, as a failed dispatch."""
        for job_id in followups.runs:
            await self.dispatch(job_id)
        for webhook_id in followups.webhooks:
            await self._send(WEBHOOK_TASK_NAME, webhook_id)

    async def check_broker(self) -> None:
        """Raises when the broker cannot be connected to within the dispatch deadline (readiness)."""
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.run_in_executor(self.threads, self.producer.connect), self.timeout)

    def close(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)
        self.producer.close()
