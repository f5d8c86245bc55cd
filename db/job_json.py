"""The job as its JSON shows it, wherever it is shown.

``GET /api/jobs/{id}`` answers it (the API's ``Job`` answer adds only how it is
sent) and a webhook's body carries it as its ``data``, so the two can never
differ. It is read from a ``JobRow`` by attribute (its column's name): what the
row holds and the JSON does not name (the tenant, heartbeats) stays out.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from runstream.db.status import Status

# Instants as Python writes them (2026-01-02T03:04:05.678901+00:00), as they always were.
Instant = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# A moment's column, shown as whether it happened.
Happened = Annotated[bool, BeforeValidator(lambda moment: moment is not None)]


class JobWebhook(BaseModel):
    url: str


def _webhook(url: str | None) -> JobWebhook | None:
    return JobWebhook(url=url) if url else None


class JobJson(BaseModel):
    """The fields of a job's JSON, and how a row becomes them."""

    model_config = ConfigDict(from_attributes=True)

    job_id: uuid.UUID = Field(validation_alias="id")
    status: Status
    user_id: str | None = Field(description="who started it, as the authenticator named them (null: no user named)")
    session_id: str | None
    message: str
    model: str
    agent: str | None = Field(description="the agent that runs it (GET /api/agents)")
    metadata: dict[str, Any] | None
    output: Any = Field(description="the run's structured answer (an agent with an output_schema), else null")
    attempt: int
    last_event_id: int = Field(validation_alias="last_seq", ge=-1)
    error: str | None
    cancel_requested: Happened = Field(validation_alias="cancel_requested_at")
    requirements: list[dict[str, Any]] | None = Field(
        description="a paused job's outstanding requirements (its input_required event's list), else null"
    )
    created_at: Instant
    started_at: Instant | None
    finished_at: Instant | None
    queued: Happened = Field(
        validation_alias="queued_at",
        description="waiting behind its session's active run (if_busy enqueue); not dispatched yet",
    )
    interrupted: Happened = Field(
        validation_alias="interrupted_at",
        description="cancelled by a later job of its session (if_busy interrupt or rollback)",
    )
    webhook: Annotated[JobWebhook | None, BeforeValidator(_webhook)] = Field(
        validation_alias="webhook_url", description="where its terminal states are POSTed (null: nowhere)"
    )
