"""Stream tokens: a short-lived capability for one job's events and cancel URLs.

``EventSource`` cannot send headers and DeltaKit's ``stop()`` posts its cancel
with none, so a browser cannot present an API key there. POST /api/jobs hands out
``<expiry>.<tenant>.<signature>`` (the tenant base64url-encoded): an HMAC-SHA256,
under the deployment's signing key, of the job id, the tenant and the expiry. The job id is
not in the token but taken from the URL it is used on, so a token for one job
opens no other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

# Tokens are tens of bytes; anything much longer is not one of ours and is not parsed.
MAX_TOKEN_CHARS = 512


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    # validate: a character outside the alphabet is an error, not silently skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


class TokenError(Exception):
    """The token is not valid for this job (malformed, forged, tampered) or has expired."""


@dataclass(frozen=True)
class StreamToken:
    token: str
    expires_at: int  # unix seconds


class TokenSigner:
    """Signs with the first of ``keys`` and accepts a token of any of them (the
    ones before it are older keys, kept so a rotation breaks no token in use).
    The keys come from RUNSTREAM_SECRET or, unset, from Postgres when the app
    starts (``api.security.load_stream_keys``)."""

    def __init__(self, keys: list[bytes], ttl_s: int):
        self.keys = keys
        self.ttl_s = ttl_s

    @staticmethod
    def _signature(key: bytes, job_id: uuid.UUID, tenant: str, expires_at: int) -> bytes:
        # JSON framing: no choice of tenant can make two different triples sign alike.
        message = json.dumps(["runstream-stream-token-v1", str(job_id), tenant, expires_at])
        return hmac.new(key, message.encode(), hashlib.sha256).digest()

    def _token(self, key: bytes, job_id: uuid.UUID, tenant: str, expires_at: int) -> str:
        signature = self._signature(key, job_id, tenant, expires_at)
        return f"{expires_at}.{_b64(tenant.encode())}.{_b64(signature)}"

    def issue(self, job_id: uuid.UUID, tenant: str) -> StreamToken:
        expires_at = int(time.time()) + self.ttl_s
        return StreamToken(self._token(self.keys[0], job_id, tenant, expires_at), expires_at)

    def links(self, job_id: uuid.UUID, tenant: str, base_url: str) -> dict[str, Any]:
        """What a job's JSON carries so a browser can stream and stop it without a
        key: absolute URLs under ``base_url`` (api.urls.public_base_url)."""
        token = self.issue(job_id, tenant)
        query = urlencode({"token": token.token})
        return {
            "stream_token": token.token,
            "stream_token_expires_at": datetime.fromtimestamp(token.expires_at, UTC).isoformat(),
            "events_url": f"{base_url}/api/jobs/{job_id}/events?{query}",
            "cancel_url": f"{base_url}/api/jobs/{job_id}/cancel?{query}",
            # A paused job's answers (input_required) go here.
            "continue_url": f"{base_url}/api/jobs/{job_id}/continue?{query}",
        }

    def verify(self, token: str, job_id: uuid.UUID) -> str:
        """The tenant the token acts for, or TokenError."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("invalid")
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit():
            raise TokenError("invalid")
        try:
            tenant = _unb64(parts[1]).decode()
        except (binascii.Error, ValueError):  # bad base64 or not UTF-8
            raise TokenError("invalid") from None
        expires_at = int(parts[0])
        # A token has one spelling: the one issued. Comparing the whole token with
        # the one this server would issue refuses leading zeros, base64 padding and
        # flipped unused bits, which decode to the same values. The signature is
        # checked before the expiry, so "expired" is only ever said of a token
        # this server really issued.
        presented = token.encode()
        # Every key is tried (no early exit), so timing tells nothing of which matched.
        matches = [
            hmac.compare_digest(presented, self._token(key, job_id, tenant, expires_at).encode()) for key in self.keys
        ]
        if not any(matches):
            raise TokenError("invalid")
        if expires_at < time.time():
            raise TokenError("expired")
        return tenant
