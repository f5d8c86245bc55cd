"""Everything the security controls add to the app, in one call (docs/security.md)."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from runstream.api import redact
from runstream.api.auth import ApiKeyAuthenticator, AuthMiddleware, KeyRing, load_authenticator
from runstream.api.cors import JsonCORSMiddleware, cors_options
from runstream.api.guards import RequestGuard
from runstream.api.limits import StreamSlots
from runstream.api.tenancy import Authenticator
from runstream.api.tokens import TokenSigner
from runstream.core.settings import Settings
from runstream.db.connector import Pool
from runstream.db.secrets import stream_secrets

log = logging.getLogger("runstream.security")

# HMAC-SHA256 keys shorter than this are guessable offline from one token.
MIN_SECRET_CHARS = 32


def stream_signer(settings: Settings) -> TokenSigner:
    """RUNSTREAM_SECRET's signer, or one whose keys ``load_stream_keys`` reads
    from Postgres when the app starts (shared by every API process)."""
    if settings.secret is None:
        return TokenSigner([], settings.stream_token_ttl_s)
    secret = settings.secret.get_secret_value()
    if len(secret) < MIN_SECRET_CHARS:
        # Says how long it must be, never what it is.
        raise RuntimeError(f"RUNSTREAM_SECRET must be at least {MIN_SECRET_CHARS} characters of random text")
    return TokenSigner([secret.encode()], settings.stream_token_ttl_s)


async def load_stream_keys(signer: TokenSigner, pool: Pool) -> None:
    """Without RUNSTREAM_SECRET: the deployment's keys from Postgres, made by the
    first process that starts, so a token works on every replica and after restarts."""
    if not signer.keys:
        signer.keys = await stream_secrets(pool)
        log.info("stream tokens are signed with the deployment's key from Postgres (RUNSTREAM_SECRET is not set)")


def announce(settings: Settings, keys: KeyRing) -> None:
    if settings.auth:
        log.info("requests are authenticated by RUNSTREAM_AUTH=%s", settings.auth)
        return
    if keys:
        # How many tenants, never which keys.
        log.info(
            "API keys configured for %d tenant(s): every /api route needs a key or a stream token", len(keys.tenants)
        )
        return
    log.warning(
        "\n" + "!" * 78 + "\n"
        "!! RUNSTREAM IS RUNNING OPEN: neither RUNSTREAM_API_KEYS nor RUNSTREAM_AUTH is set.\n"
        "!! Every request acts as tenant 'default', with no key: anyone who can reach\n"
        "!! this port can read every prompt and answer. Fine on 127.0.0.1 for\n"
        "!! development; set RUNSTREAM_API_KEYS or RUNSTREAM_AUTH before exposing it.\n" + "!" * 78
    )


def secure(app: Starlette, settings: Settings) -> None:
    keys = KeyRing(settings.api_key_map)
    announce(settings, keys)
    authenticator: Authenticator | None = None
    # A stream token outlives no tenant whose keys were all removed; a custom
    # authenticator lists no tenants, so its tokens last their time.
    token_tenants: frozenset[str] | None = None
    if settings.auth:
        authenticator = load_authenticator(settings.auth, settings)
    elif keys:
        authenticator = ApiKeyAuthenticator(keys)
        token_tenants = keys.tenants
    signer = stream_signer(settings)
    app.state.signer = signer
    app.state.streams = StreamSlots(settings.max_streams, settings.max_streams_per_tenant)
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    # add_middleware puts each one outside the previous: innermost first.
    app.add_middleware(
        AuthMiddleware,
        authenticator=authenticator,
        signer=signer,
        metrics_token=metrics_token,
        token_tenants=token_tenants,
    )
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    # Outermost, so that every answer, a 401 or a 413 too, carries the CORS headers
    # a browser needs to let the page read it.
    options = cors_options(settings)
    if options is not None:
        app.add_middleware(JsonCORSMiddleware, **options)
    redact.install()
