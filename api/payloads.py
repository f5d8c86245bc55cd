"""The JSON the API takes and gives: the new-job body and a job's status."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runstream.api.errors import ApiError

# A session id is a key, not text: room for any id scheme, small enough to index.
MAX_SESSION_ID_CHARS = 256
# As long as an agent's name may be (runstream.settings).
MAX_AGENT_NAME_CHARS = 64
MAX_WEBHOOK_URL_CHARS = 2048


def check_storable(value: Any) -> None:
    """Raise ValueError for what Postgres text and jsonb cannot hold: NUL
    characters (in strings and keys) and non-finite numbers (NaN, Infinity,
    which the JSON parser accepts). Lone surrogates never get this far: the
    JSON parser refuses them (a 400)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("must not contain NUL characters (\\u0000)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class WebhookTarget(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    url: str = Field(min_length=1, max_length=MAX_WEBHOOK_URL_CHARS)

    @field_validator("url")
    @classmethod
    def _storable(cls, value: str) -> str:
        check_storable(value)
        return value


class NewJob(BaseModel):
    # Strict: a number is not a message. Unknown fields are ignored, because
    # DeltaKit's startBody lets a page add its own.
    model_config = ConfigDict(strict=True, extra="ignore")

    message: str = Field(min_length=1)
    session_id: str | None = Field(default=None, max_length=MAX_SESSION_ID_CHARS)
    metadata: dict[str, Any] | None = None
    # A name from RUNSTREAM_AGENTS (GET /api/agents); none: the default agent.
    agent: str | None = Field(default=None, max_length=MAX_AGENT_NAME_CHARS)
    # When the session has a run still active; unset: the setting RUNSTREAM_SESSION_IF_BUSY.
    if_busy: Literal["enqueue", "reject", "interrupt", "rollback"] | None = None
    webhook: WebhookTarget | None = None

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        return value

    @field_validator("message", "session_id", "metadata")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        check_storable(value)
        return value


def parse_new_job(body: bytes, max_message_chars: int, agents: Iterable[str]) -> NewJob:
    """Malformed JSON is a 400; well-formed JSON of the wrong shape, a message
    over ``max_message_chars``, or an agent not among ``agents``, is a 422."""
    if not body.strip():
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    try:
        new = NewJob.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ApiError(422, "invalid_body", f"{where}: {first['msg']}") from None
    if len(new.message) > max_message_chars:
        raise ApiError(
            422, "message_too_long", f"message has {len(new.message)} characters, the most allowed is {max_message_chars}"
        )
    names = list(agents)
    if new.agent is not None and new.agent not in names:
        raise ApiError(422, "unknown_agent", f"unknown agent {new.agent!r}: this deployment serves {', '.join(names)}")
    return new


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_json(job: dict[str, Any]) -> dict[str, Any]:
    """A job's status. ``last_event_id`` is its newest event id (-1: none yet),
    usable as is for the events stream's ``last_event_id``."""
    return {
        "job_id": str(job["id"]),
        "status": job["status"],
        # Who started it, as the authenticator named them (null: no user named).
        "user_id": job["user_id"],
        "session_id": job["session_id"],
        "message": job["message"],
        "model": job["model"],
        "agent": job["agent"],
        "metadata": job["metadata"],
        "output": job["output"],
        "attempt": job["attempt"],
        "last_event_id": job["last_seq"],
        "error": job["error"],
        "cancel_requested": job["cancel_requested_at"] is not None,
        # A paused job's outstanding requirements (its input_required event's list).
        "requirements": job["requirements"],
        "created_at": _time(job["created_at"]),
        "started_at": _time(job["started_at"]),
        "finished_at": _time(job["finished_at"]),
        # Waiting behind its session's active run (if_busy enqueue); not dispatched yet.
        "queued": job["queued_at"] is not None,
        # Cancelled by a later job of its session (if_busy interrupt or rollback).
        "interrupted": job["interrupted_at"] is not None,
        "webhook": {"url": job["webhook_url"]} if job["webhook_url"] else None,
    }
