"""One round of stamped runs watched by SSE clients, on either side.

A round: create the jobs (held), connect every subscriber, release the jobs,
wait until every stream has ended. ``RunstreamSide`` runs the jobs in a
``bench.producer`` process (worker → Postgres → NOTIFY → API hub → SSE);
``BaselineSide`` runs them inside the in-memory recipe's web process.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from runstream.bench.services import Service
from runstream.bench.sse_client import SseStream, open_streams
from runstream.bench.stamps import stagger
from runstream.core.settings import child_environment

SETTLE_S = 0.5  # after the last subscriber connected, before the jobs start
# Called with every subscriber connected, before the jobs start (fan-out measures there).
Hook = Callable[[], None] | None


@dataclass
class Round:
    streams: list[SseStream]
    events_per_job: int

    @property
    def latencies(self) -> list[float]:
        return [latency for stream in self.streams for latency in stream.latencies]

    @property
    def all_delivered(self) -> bool:
        """Every subscriber received every event, in order."""
        return all(s.stamps == self.events_per_job and s.in_order for s in self.streams)


class RunstreamSide:
    name = "runstream"

    def __init__(self, api: Service, database_url: str):
        self.api = api
        self.database_url = database_url

    async def round(
        self,
        *,
        jobs: int,
        subscribers: int,
        events: int,
        rate: float,
        timeout: float,
        on_connected: Hook = None,
    ) -> Round:
        producer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runstream.bench.producer",
            "--jobs", str(jobs), "--events", str(events), "--rate", str(rate),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=child_environment(DATABASE_URL=self.database_url),
        )  # fmt: skip
        assert producer.stdin is not None and producer.stdout is not None
        try:
            job_ids = json.loads(await producer.stdout.readline())["jobs"]
            paths = [f"/api/jobs/{job_id}/events" for job_id in job_ids for _ in range(subscribers)]
            streams = await open_streams("127.0.0.1", self.api.http_port, paths)
            await asyncio.sleep(SETTLE_S)
            if on_connected is not None:
                on_connected()
            producer.stdin.write(b"go\n")
            await producer.stdin.drain()
            await _all_closed(streams, timeout)
            stopped = json.loads(await producer.stdout.readline())["stopped"]
            if stopped:
                raise RuntimeError(f"the event writer stopped runs: {stopped}")
            return Round(streams, events)
        finally:
            if producer.returncode is None:
                producer.kill()
            await producer.wait()


class BaselineSide:
    name = "baseline"

    def __init__(self, app: Service):
        self.app = app
        self.base = f"http://127.0.0.1:{app.port}"

    async def round(
        self,
        *,
        jobs: int,
        subscribers: int,
        events: int,
        rate: float,
        timeout: float,
        on_connected: Hook = None,
    ) -> Round:
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as http:
            await http.post("/reset")
            job_ids = []
            for index in range(jobs):
                spec = {
                    "events": events,
                    "rate": rate,
                    "offset": stagger(index, jobs, rate),
                    "hold": True,
                }
                job_ids.append((await http.post("/jobs", json=spec)).json()["job_id"])
            paths = [f"/jobs/{job_id}/events" for job_id in job_ids for _ in range(subscribers)]
            streams = await open_streams("127.0.0.1", self.app.http_port, paths)
            await asyncio.sleep(SETTLE_S)
            if on_connected is not None:
                on_connected()
            await http.post("/go")
            await _all_closed(streams, timeout)
            return Round(streams, events)


async def _all_closed(streams: list[SseStream], timeout: float) -> None:
    """Wait for every stream to end; one that has not after ``timeout`` is cut (its
    missing events then show in ``Round.all_delivered``)."""
    _, pending = await asyncio.wait([s.closed for s in streams], timeout=timeout)
    for stream in streams:
        stream.close()
    if pending:
        print(
            f"bench: {len(pending)} of {len(streams)} streams had not ended after {timeout}s",
            file=sys.stderr,
        )
