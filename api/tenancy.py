"""Which tenant a request acts for. The one place that decides it."""

from __future__ import annotations

from starlette.requests import Request

DEFAULT_TENANT = "default"


def resolve_tenant(request: Request) -> str:
    # Until API keys are checked, every request acts for the default tenant.
    return DEFAULT_TENANT
