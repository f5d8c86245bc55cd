"""Model failures, and whether another attempt could succeed.

Agno catches an exception raised during a run and turns it into a ``RunError``
event that keeps only the text. The retry decision needs the exception itself
(its class, its HTTP status), so the models Runstream builds keep the exception
that ended their last call: see ``KeepsFailure``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from agno.exceptions import ModelAuthenticationError, ModelProviderError, ModelRateLimitError


class ModelError(Exception):
    """A model call failed."""


class TransientModelError(ModelError):
    """A failure another attempt may not meet: rate limit, overload, timeout, 5xx."""


class PermanentModelError(ModelError):
    """A failure every attempt would meet again: bad request, bad credentials, refused input."""


class UnknownModelError(PermanentModelError):
    """The job names a model spec no provider here understands."""


# Statuses a provider answers when trying again later can work.
TRANSIENT_STATUS_CODES = frozenset({408, 409, 425, 429})


def is_transient(error: BaseException) -> bool:
    """Whether a new attempt of the run could succeed where this one failed."""
    if isinstance(error, ModelError):
        return isinstance(error, TransientModelError)
    if isinstance(error, ModelAuthenticationError):
        return False
    if isinstance(error, ModelRateLimitError):
        return True
    if isinstance(error, ModelProviderError):
        # Agno reports a connection failure (timeouts included) as a 502.
        return error.status_code in TRANSIENT_STATUS_CODES or error.status_code >= 500
    # Timeouts and dropped connections (httpx's timeouts are transport errors too).
    return isinstance(error, (TimeoutError, httpx.TransportError))


class KeepsFailure:
    """Mixin for an Agno ``Model``: remembers the exception that ended its last call.

    Put it before the model class in the bases, so it wraps ``aresponse_stream``
    (the entry Agno's agent loop calls for a streamed run).
    """

    failure: BaseException | None = None

    async def aresponse_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            async for item in super().aresponse_stream(*args, **kwargs):  # type: ignore[misc]
                yield item
        except Exception as exc:
            self.failure = exc
            raise
