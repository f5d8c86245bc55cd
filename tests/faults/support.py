"""What the fault tests share: throwaway services they may break, and checks.

The machine's own Postgres, Redis and RabbitMQ are shared with other test runs:
a test that stops or restarts a service starts its own instance on a free port
(``ThrowawayPostgres``, ``ThrowawayRedis``, from runstream.bench.private_services)
and breaks that one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.conftest import service_environment
from tests.support.processes import ServiceProcess
from tests.support.sse import complete_body, frames
from tests.support.waiting import eventually

# Recovery settings short enough for tests, the same in every fault test's
# processes: a dead run is noticed within about 2 s, a lost message within 3 s.
FAST_RECOVERY = {
    "RUNSTREAM_HEARTBEAT_S": "0.3",
    "RUNSTREAM_STALE_AFTER_S": "1.5",
    "RUNSTREAM_REAPER_INTERVAL_S": "0.3",
    "RUNSTREAM_PENDING_TIMEOUT_S": "2",
    "RUNSTREAM_CANCEL_POLL_S": "0.2",
    "RUNSTREAM_REDIS_VISIBILITY_TIMEOUT_S": "5",
    # Runs long enough to be broken in the middle: about 10 ms per word.
    "RUNSTREAM_OFFLINE_DELAY_MS": "10",
}


async def submit(client: httpx.AsyncClient, message: str, agent: str | None = None, **offline: Any) -> uuid.UUID:
    """POST a job through the API (``offline``: its metadata.offline knobs; ``agent``:
    the registry entry that runs it, else the default)."""
    body: dict[str, Any] = {"message": message, "metadata": {"offline": offline}}
    if agent is not None:
        body["agent"] = agent
    response = await client.post("/api/jobs", json=body)
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["job_id"])


def spawn_worker(env: dict[str, str], log_dir: Path, name: str, *extra: str) -> ServiceProcess:
    """A worker started without waiting for it (``worker_ready`` tells when it is)."""
    return ServiceProcess(name, ["worker", "-n", f"{name}@%h", *extra], env, log_dir).start()


def worker_ready(worker: ServiceProcess) -> bool:
    return " ready." in worker.log()


def fault_env(database_url: str, broker_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of one fault test's processes: its database and broker, a queue
    of its own, quick recovery (FAST_RECOVERY), and ``settings`` on top."""
    env = service_environment(database_url, broker_url, f"rs-fault-{uuid.uuid4().hex[:10]}", data_dir)
    return {**env, **FAST_RECOVERY, **settings}


# --- what a job left behind ------------------------------------------------------------------


@dataclass
class Stream:
    """What one SSE client saw of a job, across however many connections it needed."""

    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    connections: int = 0

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.events]

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [payload for _, payload in self.events]

    @property
    def last_id(self) -> int:
        return self.events[-1][0] if self.events else -1

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1][1]["type"] in ("done", "error")


class ServerError(Exception):
    """A 5xx answer to a stream request: a client that reconnects tries again."""


async def follow(
    client: httpx.AsyncClient,
    job_id: uuid.UUID,
    *,
    reconnect: bool,
    timeout: float = 60.0,
    stream: Stream | None = None,
) -> Stream:
    """Read a job's stream to its terminal event. With ``reconnect``, a stream that
    ends early or breaks (or a 5xx) is resumed with Last-Event-ID, as EventSource does,
    for up to ``timeout``; without, the one connection must carry the whole stream."""
    stream = stream or Stream()
    if not reconnect:
        await _read_once(client, job_id, stream, timeout)
        return stream

    async def resumed_to_the_end() -> bool:
        try:
            await _read_once(client, job_id, stream, timeout)
        except (httpx.TransportError, ServerError):
            return False
        return stream.finished

    # The wait's interval is EventSource's reconnection delay.
    await eventually(resumed_to_the_end, timeout=timeout, interval=0.2, what=f"the stream of {job_id} to its end")
    return stream


async def _read_once(client: httpx.AsyncClient, job_id: uuid.UUID, stream: Stream, timeout: float) -> None:
    """One connection: from after the last event seen to wherever it ends."""
    headers = {"Last-Event-ID": str(stream.last_id)} if stream.events else {}
    body = ""
    stream.connections += 1
    try:
        async with client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers, timeout=timeout) as resp:
            if resp.status_code >= 500:
                raise ServerError(resp.status_code, await resp.aread())
            assert resp.status_code == 200, (resp.status_code, await resp.aread())
            async for chunk in resp.aiter_text():
                body += chunk
    finally:
        # What arrived whole counts, however the connection ended.
        stream.events.extend((frame.id, frame.data) for frame in frames(complete_body(body)))


def text_of(payloads: Iterable[dict[str, Any]]) -> str:
    """The answer a client shows: the text deltas after the last ``retry`` event."""
    text = ""
    for payload in payloads:
        if payload["type"] == "retry":
            text = ""
        elif payload["type"] == "text_delta":
            text += payload["delta"]
    return text


async def logged_events(conn: psycopg.AsyncConnection, job_id: uuid.UUID) -> list[tuple[int, int, dict[str, Any]]]:
    """(seq, attempt, payload) of every row of the job, after checking seqs are 0, 1, 2, … gap-free."""
    cur = await conn.execute("SELECT seq, attempt, payload FROM job_events WHERE job_id = %s ORDER BY seq", [job_id])
    rows = [(r[0], r[1], r[2]) for r in await cur.fetchall()]
    assert [r[0] for r in rows] == list(range(len(rows))), f"seqs of {job_id} not gap-free: {[r[0] for r in rows]}"
    return rows


async def job_row(conn: psycopg.AsyncConnection, job_id: uuid.UUID) -> dict[str, Any]:
    cur = await conn.execute(
        "SELECT status, attempt, error, worker, last_seq, available_at FROM jobs WHERE id = %s", [job_id]
    )
    status, attempt, error, worker, last_seq, available_at = await cur.fetchone()
    return {
        "status": status,
        "attempt": attempt,
        "error": error,
        "worker": worker,
        "last_seq": last_seq,
        "available_at": available_at,
    }


def dumps(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)
