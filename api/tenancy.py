"""Who a request acts for: its principal. The one place handlers ask.

``api.auth.AuthMiddleware`` decides it before any handler runs, with the
deployment's authenticator (the API-key list by default, or the one
``RUNSTREAM_AUTH`` names) or from a stream token. In the open mode every request
acts as tenant "default".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from runstream.api.errors import ApiError

# The tenant of the open mode (no API keys configured).
DEFAULT_TENANT = "default"
# Where AuthMiddleware keeps a request's principal, in the ASGI scope's state.
PRINCIPAL_STATE_KEY = "runstream_principal"
# Tenants and user ids are keys (compared, indexed, put in logs), not text.
MAX_ID_CHARS = 256


def _check_id(name: str, value: object, *, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or "\x00" in value:
        raise ValueError(f"Principal.{name} must be a non-empty string of at most {MAX_ID_CHARS} characters, no NUL")


@dataclass(frozen=True)
class Principal:
    """What an authenticator answers: the tenant whose jobs the request may see
    and act on, and the user within it when the authenticator knows one (kept
    on the jobs the request creates, and handed to the agent)."""

    tenant: str
    user_id: str | None = None

    def __post_init__(self) -> None:
        # A malformed principal is the authenticator's bug, found at its source.
        _check_id("tenant", self.tenant, required=True)
        _check_id("user_id", self.user_id, required=False)


# ``RUNSTREAM_AUTH``'s contract: an async callable that answers the request's
# principal, or raises ``api.auth.Unauthorized`` (a 401). It sees the request's
# headers, query and cookies; the body is the handler's.
Authenticator = Callable[[Request], Awaitable[Principal]]


def resolve_principal(request: Request) -> Principal:
    principal: Principal | None = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if principal is None:
        # Only a route on one of the open paths gets here: fail closed.
        raise ApiError(401, "unauthorized", "this route needs 'Authorization: Bearer <key>'")
    return principal


def resolve_tenant(request: Request) -> str:
    return resolve_principal(request).tenant
