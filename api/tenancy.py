"""Which tenant a request acts for. The one place handlers ask.

``api.auth.AuthMiddleware`` decides it, from the API key or the stream token,
before any handler runs (tenant "default" when the API runs open).
"""

from __future__ import annotations

from starlette.requests import Request

from runstream.api.errors import ApiError

# The tenant of the open mode (no API keys configured).
DEFAULT_TENANT = "default"
# Where AuthMiddleware keeps a request's tenant, in the ASGI scope's state.
TENANT_STATE_KEY = "runstream_tenant"


def resolve_tenant(request: Request) -> str:
    tenant = request.scope.get("state", {}).get(TENANT_STATE_KEY)
    if tenant is None:
        # Only a route on one of the open paths gets here: fail closed.
        raise ApiError(401, "unauthorized", "this route needs 'Authorization: Bearer <key>'")
    return tenant
