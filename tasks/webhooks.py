"""One attempt at one webhook delivery: POST the job's JSON to its URL, signed
per Standard Webhooks, and record how it went.

Headers: ``webhook-id`` (stable for the job state announced: every attempt
sends the same one, so a receiver can drop duplicates), ``webhook-timestamp``
(epoch seconds of this attempt) and ``webhook-signature`` (``v1,`` + base64
HMAC-SHA256 of ``id.timestamp.body`` under the tenant's ``whsec_`` secret).
Body: ``{"type": "job.<status>", "timestamp": <when the job reached it>,
"data": <the job's JSON, as GET /api/jobs/{id} answers it>}``.

An attempt is bounded in time as a whole (``webhook_timeout_s``), follows no
redirect (a 3xx is a failed attempt), reads no response body, and re-checks the
destination first (a name may now resolve to a private address). A 2xx is
delivered; anything else is tried again after an exponential backoff, up to
``webhook_max_attempts``. A refused destination is not tried again. It all runs
on the worker's event loop beside the runs, which a slow receiver cannot hold
up: it only ever waits on its own socket, on the event loop, holding no task slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
from standardwebhooks.webhooks import Webhook

from runstream.core.broker import WEBHOOK_TASK_NAME
from runstream.core.destinations import DestinationRefused, check_destination
from runstream.core.settings import Settings
from runstream.db.job_json import JobJson
from runstream.db.webhooks import Delivery, claim_delivery, record_attempt

if TYPE_CHECKING:
    from runstream.tasks.runtime import Runtime

log = logging.getLogger("runstream.worker")

# A delivery's lease outlives its attempt by this much (see db.queries.CLAIM_WEBHOOK).
LEASE_MARGIN_S = 10.0


def backoff_s(attempt: int, settings: Settings) -> float:
    """The wait after failed attempt ``attempt``: base, 2·base, 4·base … capped."""
    return min(settings.webhook_backoff_max_s, settings.webhook_backoff_s * 2 ** (attempt - 1))


def signed_request(delivery: Delivery, secret: str, now: datetime) -> tuple[bytes, dict[str, str]]:
    job = JobJson.model_validate(delivery.job).model_dump(mode="json")
    body = json.dumps(
        {"type": f"job.{delivery.job_status}", "timestamp": delivery.created_at.isoformat(), "data": job},
        separators=(",", ":"),
    ).encode()
    headers = {
        "content-type": "application/json",
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(delivery.webhook_id, now, body.decode()),
    }
    return body, headers


async def deliver_webhook(runtime: Runtime, webhook_id: str) -> None:
    """One attempt, and the message for the next one when it failed."""
    try:
        retry_in_s = await deliver(runtime, webhook_id)
    except Exception:  # noqa: BLE001 - the reaper sends it again once its lease is over
        log.exception("webhook %s: attempt not recorded", webhook_id)
        return
    if retry_in_s is not None:
        await runtime.reaper.send_later(WEBHOOK_TASK_NAME, webhook_id, retry_in_s)


async def deliver(runtime: Runtime, webhook_id: str) -> float | None:
    """One attempt, if the delivery is due and has attempts left. Answers the
    seconds until the next attempt, or None when there is none to schedule."""
    settings = runtime.settings
    delivery = await claim_delivery(
        runtime.pool,
        webhook_id,
        max_attempts=settings.webhook_max_attempts,
        lease_s=settings.webhook_timeout_s * 2 + LEASE_MARGIN_S,
    )
    if delivery is None:
        return None
    secret = settings.webhook_secret(delivery.job.tenant)
    started = time.monotonic()
    if secret is None:
        await _refused(runtime, delivery, "webhooks are not configured for this tenant (no signing secret)", started)
        return None
    try:
        await check_destination(
            delivery.url, allow_private=settings.webhook_allow_private, resolve_timeout_s=settings.webhook_timeout_s
        )
    except DestinationRefused as exc:
        await _refused(runtime, delivery, str(exc), started)
        return None
    body, headers = signed_request(delivery, secret, datetime.now(UTC))
    response_status: int | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(settings.webhook_timeout_s):
            async with runtime.webhook_http.stream("POST", delivery.url, content=body, headers=headers) as response:
                response_status = response.status_code
    except TimeoutError:
        error = f"no answer within {settings.webhook_timeout_s:g}s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    duration_ms = (time.monotonic() - started) * 1000
    if response_status is not None and 200 <= response_status < 300:
        await record_attempt(
            runtime.pool,
            delivery,
            outcome="delivered",
            status="delivered",
            duration_ms=duration_ms,
            response_status=response_status,
        )
        log.info("webhook %s delivered (attempt %d, %d)", webhook_id, delivery.attempt, response_status)
        return None
    if error is None:
        error = f"answered {response_status}"
    last = delivery.attempt >= settings.webhook_max_attempts
    retry_in_s = 0.0 if last else backoff_s(delivery.attempt, settings)
    await record_attempt(
        runtime.pool,
        delivery,
        outcome="failed",
        status="failed" if last else "pending",
        duration_ms=duration_ms,
        response_status=response_status,
        error=error,
        retry_in_s=retry_in_s,
    )
    log.warning(
        "webhook %s attempt %d failed (%s)%s",
        webhook_id,
        delivery.attempt,
        error,
        "; giving up" if last else f"; next in {retry_in_s:g}s",
    )
    return None if last else retry_in_s


async def _refused(runtime: Runtime, delivery: Delivery, reason: str, started: float) -> None:
    await record_attempt(
        runtime.pool,
        delivery,
        outcome="refused",
        status="failed",
        duration_ms=(time.monotonic() - started) * 1000,
        error=reason,
    )
    log.warning("webhook %s refused: %s", delivery.webhook_id, reason)
