"""Many API replicas: three API processes and two workers on one database and
queue. Streams of one job spread over the three replicas all receive every
event; a replica killed mid-stream loses nothing for the clients that
reconnect to another one with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import service_environment
from tests.support.config import services
from tests.support.processes import ApiServer, start_api, start_worker
from tests.support.waiting import eventually

ASYNC = pytest.mark.asyncio(loop_scope="session")
STREAMS_PER_REPLICA = 2
JOBS = 4
WORDS = 150


class Follower:
    """One client of a job's stream: the ids and payloads it got, in order, across reconnects."""

    def __init__(self, job_id: str, replicas: list[ApiServer]):
        self.job_id = job_id
        self.replicas = replicas  # the first is where it starts; the others, where it reconnects
        self.ids: list[int] = []
        self.payloads: list[dict] = []
        self.reconnects = 0

    async def run(self, client: httpx.AsyncClient) -> None:
        for replica in self.replicas:
            headers = {"Last-Event-ID": str(self.ids[-1])} if self.ids else {}
            try:
                if await self._read(client, f"{replica.url}/api/jobs/{self.job_id}/events", headers):
                    return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                pass
            self.reconnects += 1
        raise AssertionError(f"no replica finished the stream of {self.job_id}")

    async def _read(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> bool:
        """True once the terminal event has arrived."""
        buffer = ""
        async with client.stream("GET", url, headers=headers, timeout=60) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_text():
                buffer += chunk
                *blocks, buffer = buffer.split("\n\n")
                for block in blocks:
                    fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
                    if "data" not in fields or "id" not in fields:
                        continue
                    self.ids.append(int(fields["id"]))
                    self.payloads.append(json.loads(fields["data"]))
                    if self.payloads[-1]["type"] in ("done", "error"):
                        return True
        return False


@ASYNC
async def test_three_replicas_two_workers_and_a_replica_killed_mid_stream(database_url: str, tmp_path: Path) -> None:
    queue = f"rs-test-replicas-{uuid.uuid4().hex[:12]}"
    env = {
        **service_environment(database_url, services.redis_url, queue, tmp_path),
        # Slow enough that the kill lands while the runs stream.
        "RUNSTREAM_OFFLINE_DELAY_MS": "20",
    }
    workers = [start_worker(env, tmp_path, f"replica-worker-{n}") for n in range(2)]
    replicas = [start_api(env, tmp_path, f"replica-api-{n}") for n in range(3)]
    victim, survivors = replicas[0], replicas[1:]
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            job_ids = []
            for n in range(JOBS):
                created = await client.post(
                    f"{replicas[n % 3].url}/api/jobs",
                    json={"message": f"q{n}", "metadata": {"offline": {"words": WORDS}}},
                )
                assert created.status_code == 202, created.text
                job_ids.append(created.json()["job_id"])
            followers = [
                Follower(job_id, [replica, *(r for r in survivors if r is not replica)])
                for job_id in job_ids
                for replica in replicas
                for _ in range(STREAMS_PER_REPLICA)
            ]
            tasks = [asyncio.create_task(f.run(client)) for f in followers]
            on_victim = [f for f in followers if f.replicas[0] is victim]

            # Kill the replica once each of its clients is mid-stream.
            def all_mid_stream() -> bool:
                if any(f.payloads and f.payloads[-1]["type"] in ("done", "error") for f in on_victim):
                    raise AssertionError("a run finished before the replica could be killed mid-stream")
                return all(len(f.ids) >= 5 for f in on_victim)

            await eventually(
                all_mid_stream, timeout=60, interval=0.01, what="every client of the doomed replica to be mid-stream"
            )
            victim.kill()
            await asyncio.wait_for(asyncio.gather(*tasks), 120)

            logs = {}
            for job_id in job_ids:
                replay = await client.get(f"{survivors[0].url}/api/jobs/{job_id}/events", timeout=30)
                logs[job_id] = [json.loads(line[6:]) for line in replay.text.split("\n") if line.startswith("data: ")]
        for follower in followers:
            log = logs[follower.job_id]
            assert follower.ids == list(range(len(log))), (follower.job_id, follower.reconnects)
            assert follower.payloads == log
            assert log[-1] == {"type": "done", "status": "completed"}
        assert all(f.reconnects == 1 for f in on_victim)
        assert all(f.reconnects == 0 for f in followers if f not in on_victim)
    finally:
        for process in (*replicas, *workers):
            process.stop()
