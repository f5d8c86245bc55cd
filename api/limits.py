"""Per-tenant and per-process limits, answered as 429 with ``Retry-After``.

Open SSE streams are counted here, in the process that holds them (a stream is
a connection to one process, so that is where it costs). Job creation limits
(rate and active jobs) are counted in Postgres by the db layer, so they hold
across every API process; this module turns a refusal into the API's error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from runstream.api.errors import ApiError
from runstream.core.settings import Settings
from runstream.db.jobs import CreationLimits, LimitExceeded

# Streams end when their jobs do, which is not known in advance: a client that
# was refused a stream tries again after this long.
STREAM_RETRY_AFTER_S = 5


class StreamSlots:
    """The SSE streams this process has open, in all and per tenant."""

    def __init__(self, total: int, per_tenant: int):
        self.total = total
        self.per_tenant = per_tenant
        self.open = 0
        self.by_tenant: Counter[str] = Counter()

    def hold(self, tenant: str) -> Callable[[], None]:
        """Take a slot (429 when none is free); the stream's response calls what
        this returns when it ends, however it ends (``EventStreamResponse``)."""
        if self.open >= self.total:
            raise _too_many_streams(f"this server has {self.total} streams open, the most it serves")
        if self.by_tenant[tenant] >= self.per_tenant:
            raise _too_many_streams(f"this tenant has {self.per_tenant} streams open, the most allowed")
        self.open += 1
        self.by_tenant[tenant] += 1
        return lambda: self._release(tenant)

    def _release(self, tenant: str) -> None:
        self.open -= 1
        self.by_tenant[tenant] -= 1
        if not self.by_tenant[tenant]:
            del self.by_tenant[tenant]


def _too_many_streams(message: str) -> ApiError:
    return ApiError(429, "too_many_streams", message, headers={"Retry-After": str(STREAM_RETRY_AFTER_S)})


def job_limit_error(exc: LimitExceeded) -> ApiError:
    if exc.kind == "rate":
        code = "rate_limited"
        message = f"this tenant created {exc.limit} jobs in the last {exc.window_s}s, the most allowed"
    else:
        code = "too_many_active_jobs"
        message = f"this tenant has {exc.limit} jobs pending or running, the most allowed; retry when one ends"
    return ApiError(429, code, message, headers={"Retry-After": str(exc.retry_after_s)})


def creation_limits(settings: Settings) -> CreationLimits:
    return CreationLimits(
        rate=settings.job_rate_limit, window_s=settings.job_rate_window_s, active=settings.max_active_jobs
    )
