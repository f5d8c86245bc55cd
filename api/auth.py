"""Who is calling: authenticators, stream tokens, and the open mode.

One ASGI middleware in front of the whole route table decides the principal
(tenant, user id) of every request before any handler runs, and it fails closed:
every path needs a credential except the few listed in ``OPEN_PATHS``, so a route
someone adds later is protected without doing anything. Handlers read the result
with ``api.tenancy.resolve_principal`` / ``resolve_tenant``.

Credentials:

- whatever the deployment's authenticator accepts: by default the API-key list
  (``RUNSTREAM_API_KEYS``: ``Authorization: Bearer <key>``, the key's tenant
  acts), or the async callable ``RUNSTREAM_AUTH=module:callable`` names (a JWT
  authenticator ships in ``api.jwt_auth``);
- ``?token=<stream token>``, on a request with no ``Authorization`` header, on
  the routes whose endpoint is marked with ``accepts_stream_token`` (a job's
  events, cancel and continue), for that job only: headers are what
  ``EventSource`` and DeltaKit's ``stop()`` cannot send.

With neither keys nor an authenticator configured the API is open: every request
acts as tenant ``default`` (and says so loudly at start-up).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import inspect
import ipaddress
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from runstream.api.errors import error_response
from runstream.api.tenancy import DEFAULT_TENANT, PRINCIPAL_STATE_KEY, Authenticator, Principal
from runstream.api.tokens import TokenError, TokenSigner
from runstream.core.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# Served to anyone: liveness/readiness probes, the chat page, the operator
# console, the API's own description. None of them reads or reveals a tenant's
# data (the pages ask the API for it with the key typed into them).
OPEN_PATHS = frozenset({"/", "/console", "/healthz", "/readyz", "/favicon.ico", "/api/openapi.json"})
OPEN_PREFIXES = ("/static/",)
METRICS_PATH = "/metrics"
STREAM_TOKEN_ATTR = "_runstream_accepts_stream_token"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def accepts_stream_token(endpoint: Endpoint) -> Endpoint:
    """Mark a route endpoint as one a stream token opens. Its path must have a
    ``{job_id}``: the token is valid only for that job."""
    setattr(endpoint, STREAM_TOKEN_ATTR, True)
    return endpoint


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """The configured API keys. Lookups compare digests in constant time against
    every key, so neither a key's length nor which key matched shows in timing."""

    def __init__(self, key_map: dict[str, str]):
        self._entries = [(_digest(key), tenant) for key, tenant in key_map.items()]
        self.tenants = frozenset(key_map.values())

    def __bool__(self) -> bool:
        return bool(self._entries)

    def tenant_for(self, key: str) -> str | None:
        digest = _digest(key)
        found = None
        for entry, tenant in self._entries:
            if hmac.compare_digest(entry, digest):
                found = tenant
        return found


class Unauthorized(Exception):
    """An authenticator's refusal: a 401 with ``{"error": {"code", "message"}}``.
    The message reaches the client: say what is wrong with the credential, never
    what the right one is."""

    def __init__(self, code: str = "unauthorized", message: str = "this route needs credentials"):
        super().__init__(message)
        self.code = code
        self.message = message


def _route_path(scope: Scope) -> str:
    root = scope.get("root_path", "")
    path: str = scope["path"]
    return path[len(root) :] if root and path.startswith(root) else path


def _token_job_id(routes: Iterable[BaseRoute], scope: Scope) -> uuid.UUID | None:
    """The job a stream token would open at this URL: the ``{job_id}`` of the route
    the router will pick, if that route accepts stream tokens; else None."""
    for route in routes:
        match, child = route.matches(scope)
        if match is not Match.FULL:
            continue
        if isinstance(route, Mount):
            return _token_job_id(route.routes, {**scope, **child})
        if not getattr(getattr(route, "endpoint", None), STREAM_TOKEN_ATTR, False):
            return None
        try:
            return uuid.UUID(str(child["path_params"]["job_id"]))
        except (KeyError, ValueError):
            return None
    return None


def bearer_credential(headers: Headers, *, invalid_code: str, credential_name: str) -> str | None:
    """The credential of ``Authorization: Bearer <credential>``; None without the
    header; Unauthorized(``invalid_code``) for any other form of it."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized(invalid_code, f"the Authorization header must be 'Bearer <{credential_name}>'")
    return credential.strip()


class ApiKeyAuthenticator:
    """The default authenticator: ``Authorization: Bearer <key>`` with a key of
    ``RUNSTREAM_API_KEYS``; the key's tenant acts, no user is named."""

    def __init__(self, keys: KeyRing):
        self.keys = keys

    async def __call__(self, request: Request) -> Principal:
        credential = bearer_credential(request.headers, invalid_code="invalid_api_key", credential_name="key")
        if credential is None:
            raise Unauthorized("unauthorized", "this route needs 'Authorization: Bearer <key>'")
        tenant = self.keys.tenant_for(credential)
        if tenant is None:
            raise Unauthorized("invalid_api_key", "the API key is not valid")
        return Principal(tenant)


def load_authenticator(spec: str, settings: Settings) -> Authenticator:
    """``RUNSTREAM_AUTH``'s ``module:callable``: an async callable taking the
    request, or a class whose instance, built with the settings, is one."""
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            target = getattr(target, name)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"RUNSTREAM_AUTH={spec} cannot be loaded: {exc}") from exc
    is_class = inspect.isclass(target)
    if is_class:
        target = target(settings)
    # A coroutine function, or an object whose class defines ``async def __call__``.
    if not (inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__)):
        raise SettingsError(
            f"RUNSTREAM_AUTH={spec} must name an async callable (request) -> Principal, or a class of one"
        )
    authenticator: Authenticator = target
    return authenticator


class AuthMiddleware:
    """``authenticator`` None: the open mode. ``token_tenants``: the tenants a
    stream token may still act for (None: any), so a tenant whose API keys were
    all removed loses its outstanding tokens too."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator | None,
        signer: TokenSigner,
        metrics_token: str | None,
        token_tenants: frozenset[str] | None = None,
    ):
        self.app = app
        self.authenticator = authenticator
        self.signer = signer
        self.token_tenants = token_tenants
        self.metrics_digest = _digest(metrics_token) if metrics_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        try:
            if path == METRICS_PATH:
                self._check_metrics(scope)
            elif path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
                scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = await self._principal(scope)
        except Unauthorized as exc:
            response = error_response(401, exc.code, exc.message, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_metrics(self, scope: Scope) -> None:
        if self.metrics_digest is None:
            return
        credential = bearer_credential(Headers(scope=scope), invalid_code="invalid_api_key", credential_name="key")
        if credential is None or not hmac.compare_digest(_digest(credential), self.metrics_digest):
            raise Unauthorized("invalid_metrics_token", "/metrics needs 'Authorization: Bearer <metrics token>'")

    async def _principal(self, scope: Scope) -> Principal:
        if self.authenticator is None:
            return Principal(DEFAULT_TENANT)
        token = QueryParams(scope["query_string"]).get("token")
        if token is not None and "authorization" not in Headers(scope=scope):
            return Principal(self._stream_token_tenant(scope, token))
        principal = await self.authenticator(Request(scope))
        if not isinstance(principal, Principal):
            raise TypeError(f"the authenticator answered {type(principal).__name__}, not a Principal")
        return principal

    def _stream_token_tenant(self, scope: Scope, token: str) -> str:
        job_id = _token_job_id(scope["app"].routes, scope)
        if job_id is None:
            raise Unauthorized("invalid_token", "a stream token opens only its job's events, cancel and continue URLs")
        try:
            tenant = self.signer.verify(token, job_id)
        except TokenError as exc:
            if str(exc) == "expired":
                raise Unauthorized("token_expired", "the stream token has expired") from None
            raise Unauthorized("invalid_token", "the stream token is not valid for this job") from None
        if self.token_tenants is not None and tenant not in self.token_tenants:
            raise Unauthorized("invalid_token", "the stream token is not valid for this job")
        return tenant


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        # Any other name may resolve to a public address: not loopback.
        return False


def open_bind_refusal(settings: Settings, host: str) -> str | None:
    """Why the API must not start open on ``host``, or None when it may."""
    if settings.api_key_map or settings.auth or settings.allow_open or is_loopback(host):
        return None
    return (
        f"runstream: refusing to serve the API open (neither RUNSTREAM_API_KEYS nor RUNSTREAM_AUTH is set) on {host}, "
        "which is not a loopback address: anyone who reaches it could read every prompt and answer. "
        "Set RUNSTREAM_API_KEYS or RUNSTREAM_AUTH, bind 127.0.0.1, or set RUNSTREAM_ALLOW_OPEN=1 to accept that."
    )
