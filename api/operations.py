"""Operations routes: ``/healthz`` (the process is up), ``/readyz`` (it can serve),
``/metrics`` (Prometheus).

``/readyz`` checks what serving needs: the database answers, the LISTEN
connection is up (without it live streams stall), and the broker accepts a
connection (without it new jobs wait for the reaper). 200 ``{"status": "ready",
"checks": {...}}`` when all pass, else 503 with each failed check's reason code
(``timeout``, ``unreachable``, ``reconnecting``): never exception text, which
names hosts and users to whoever asks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from runstream.api.payloads import CheckOutcome, Health, Readiness, ReadinessChecks
from runstream.core.metrics import JOBS, OPEN_STREAMS
from runstream.db.analytics import jobs_by_status
from runstream.db.health import ping
from runstream.db.status import Status

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    return Health(status="ok").response()


async def _check(name: str, probe: Awaitable[object], timeout: float) -> CheckOutcome:
    """``ok``, ``timeout`` or ``unreachable``. The route is open to anyone, so the
    reason is a code; the exception itself goes to the log, for the operator."""
    try:
        await asyncio.wait_for(probe, timeout)
    except TimeoutError:
        log.warning("readiness: %s gave no answer within %gs", name, timeout)
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - any failure means the same: not ready
        log.warning("readiness: %s check failed: %r", name, exc)
        return "unreachable"
    return "ok"


async def readyz(request: Request) -> Response:
    state = request.app.state
    timeout = state.settings.readiness_timeout_s
    database, broker = await asyncio.gather(
        _check("database", ping(state.pool, timeout), timeout),
        _check("broker", state.dispatcher.check_broker(), timeout),
    )
    checks = ReadinessChecks(database=database, listen="ok" if state.hub.listening else "reconnecting", broker=broker)
    ready = all(result == "ok" for result in checks.model_dump().values())
    return Readiness(status="ready" if ready else "unavailable", checks=checks).response(200 if ready else 503)


async def metrics(request: Request) -> Response:
    state = request.app.state
    # Collected at scrape time; a database that does not answer leaves the last values.
    try:
        counts = await asyncio.wait_for(jobs_by_status(state.pool), state.settings.readiness_timeout_s)
    except Exception as exc:  # noqa: BLE001 - the scrape still serves the process's own series
        log.warning("metrics: job counts unavailable: %r", exc)
        counts = None
    if counts is not None:
        for status in Status:
            JOBS.labels(status).set(counts.get(status, 0))
    OPEN_STREAMS.set(state.hub.open_streams)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
