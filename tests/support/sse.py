"""Read SSE the way DeltaKit's background-sse transport does, and check the framing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

TERMINAL = {"done", "error"}


@dataclass(frozen=True)
class Frame:
    id: int | None
    data: dict[str, Any]


def deltakit_events(body: str) -> list[dict[str, Any]]:
    """DeltaKit's parser: split on a blank line, JSON.parse each ``data:`` line on its own."""
    events = []
    for block in body.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data:"):
                events.append(json.loads(line[5:].strip()))
    return events


def frames(body: str) -> list[Frame]:
    """Every event block with its id; comments and ``retry:`` blocks are skipped."""
    out = []
    for block in body.split("\n\n"):
        event_id, data = None, None
        for line in block.split("\n"):
            if line.startswith("id:"):
                event_id = int(line[3:].strip())
            elif line.startswith("data:"):
                data = json.loads(line[5:].strip())
        if data is not None:
            out.append(Frame(event_id, data))
    return out


async def read_stream(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
    timeout: float = 60.0,
) -> str:
    """The raw body of an events stream: until the server ends it, or until
    ``stop_after`` events have arrived (then the client disconnects)."""
    body = ""
    async with client.stream("GET", url, headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_text():
            body += chunk
            if stop_after is not None and len(frames(body.rsplit("\n\n", 1)[0] + "\n\n")) >= stop_after:
                break
    return body


def complete_body(body: str) -> str:
    """The part of a body made of whole blocks (a disconnect can cut the last one)."""
    head, sep, _ = body.rpartition("\n\n")
    return head + sep


def text_joined(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive text deltas joined: how many rows the worker's flushes made of
    them depends on timing, what they say does not."""
    out: list[dict[str, Any]] = []
    for payload in payloads:
        if payload["type"] == "text_delta" and out and out[-1]["type"] == "text_delta":
            out[-1] = {"type": "text_delta", "delta": out[-1]["delta"] + payload["delta"]}
        else:
            out.append(dict(payload))
    return out
