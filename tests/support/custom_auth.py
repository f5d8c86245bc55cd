"""A custom authenticator, as a host application would write one: its own
session header names the tenant and the user (a stand-in for its login)."""

from __future__ import annotations

from starlette.requests import Request

from runstream import Principal, Unauthorized

SESSION_HEADER = "x-host-session"


async def authenticate(request: Request) -> Principal:
    session = request.headers.get(SESSION_HEADER)
    if session is None:
        raise Unauthorized("no_session", "log in to the host application first")
    tenant, _, user = session.partition("/")
    if not tenant or not user:
        raise Unauthorized("bad_session", "the session is not tenant/user")
    return Principal(tenant=tenant, user_id=user)


def not_async(request: Request) -> Principal:
    return Principal("nobody")
