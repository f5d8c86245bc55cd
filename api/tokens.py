"""Stream tokens: a short-lived capability for one job's events and cancel URLs.

``EventSource`` cannot send headers and DeltaKit's ``stop()`` posts its cancel
with none, so a browser cannot present an API key there. POST /api/jobs hands out
``<expiry>.<tenant>.<signature>`` (the tenant base64url-encoded): an HMAC-SHA256,
under the server secret, of the job id, the tenant and the expiry. The job id is
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
    def __init__(self, secret: bytes, ttl_s: int):
        self.secret = secret
        self.ttl_s = ttl_s

    def _signature(self, job_id: uuid.UUID, tenant: str, expires_at: int) -> bytes:
        # JSON framing: no choice of tenant can make two different triples sign alike.
        message = json.dumps(["runstream-stream-token-v1", str(job_id), tenant, expires_at])
        return hmac.new(self.secret, message.encode(), hashlib.sha256).digest()

    def issue(self, job_id: uuid.UUID, tenant: str) -> StreamToken:
        expires_at = int(time.time()) + self.ttl_s
        signature = self._signature(job_id, tenant, expires_at)
        return StreamToken(f"{expires_at}.{_b64(tenant.encode())}.{_b64(signature)}", expires_at)

    def links(self, job_id: uuid.UUID, tenant: str) -> dict[str, Any]:
        """What a job's JSON carries so a browser can stream and stop it without a key."""
        token = self.issue(job_id, tenant)
        query = urlencode({"token": token.token})
        return {
            "stream_token": token.token,
            "stream_token_expires_at": datetime.fromtimestamp(token.expires_at, UTC).isoformat(),
            "events_url": f"/api/jobs/{job_id}/events?{query}",
            "cancel_url": f"/api/jobs/{job_id}/cancel?{query}",
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
            signature = _unb64(parts[2])
        except (binascii.Error, ValueError):  # bad base64 or not UTF-8
            raise TokenError("invalid") from None
        expires_at = int(parts[0])
        # The signature is checked before the expiry, so "expired" is only ever
        # said of a token this server really issued.
        if not hmac.compare_digest(signature, self._signature(job_id, tenant, expires_at)):
            raise TokenError("invalid")
        if expires_at < time.time():
            raise TokenError("expired")
        return tenant
