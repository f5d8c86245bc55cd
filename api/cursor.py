"""The opaque keyset cursor of ``GET /api/jobs``: the (created_at, id) of a page's last row."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from runstream.api.errors import ApiError

# A cursor this API gives out is about 80 characters. Anything much longer is not
# one of ours and is refused before it is decoded: a deeply nested JSON array
# would otherwise send the parser into RecursionError.
MAX_CURSOR_CHARS = 256
INVALID = "cursor is not one this API gave out"


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(job_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    if len(text) > MAX_CURSOR_CHARS:
        raise ApiError(400, "invalid_cursor", INVALID)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created_at, job_id = json.loads(raw)
        position = datetime.fromisoformat(created_at), uuid.UUID(job_id)
    except (ValueError, TypeError, AttributeError, RecursionError):  # bad base64, JSON, shape, date or uuid
        raise ApiError(400, "invalid_cursor", INVALID) from None
    if position[0].tzinfo is None:
        raise ApiError(400, "invalid_cursor", INVALID)
    return position
