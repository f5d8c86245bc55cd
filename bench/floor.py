"""The delivery floor: what a durable LISTEN/NOTIFY path costs before any Runstream code.

Both ends of one measurement. ``python -m bench.floor --events E --rate R`` is
the writer, a process of its own as a worker is: it creates one job row (for the
events' foreign key), prints ``{"job": ...}``, waits for a line on stdin, then
yields the stamped schedule of ``bench.stamps`` and writes each event the
cheapest durable way there is (``queries.FLOOR_APPEND_EVENT``: insert and notify
in one autocommit statement, psycopg on uvloop like the worker). ``floor_round``
is the listener: the API hub's own LISTEN connection (``db.listener.Listener``),
taking ``now - stamp`` when each notification arrives.

So the floor is the worker → Postgres → commit (WAL flush) → listening backend →
LISTEN connection part of delivery, with nothing of Runstream's in it and
without the API → SSE → client hop that follows: a lower bound for Runstream's
delivery latency at the same rate on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import suppress
from typing import Any

from runstream.bench import queries
from runstream.bench.stamps import stamp_run
from runstream.core.settings import child_environment, get_settings
from runstream.db.connector import open_pool
from runstream.db.jobs import create_job
from runstream.db.listener import Listener
from runstream.tasks.runtime import new_loop


async def write(events: int, rate: float) -> None:
    settings = get_settings()
    assert settings.database_url, "DATABASE_URL is not set"
    pool = await open_pool(settings.database_url, 1, name="runstream-bench-floor")
    job = await create_job(pool, tenant="bench", message="floor", model="offline")
    print(json.dumps({"job": str(job.id)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    seq = 0
    # One connection held for the whole run (the pool's autocommit one): no checkout per event.
    async with pool.connection() as conn:

        async def emit(payload: dict[str, Any]) -> None:
            nonlocal seq
            params = {"job_id": job.id, "seq": seq, "payload": json.dumps(payload)}
            await conn.execute(queries.FLOOR_APPEND_EVENT, params)
            seq += 1

        await stamp_run(emit, events=events, rate=rate)
    await pool.close()


async def floor_round(database_url: str, *, events: int, rate: float, timeout: float) -> list[float]:
    """Latencies (s) of ``events`` stamped events at ``rate``, written by a floor
    process and heard on a LISTEN connection of this one."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    listening = asyncio.Event()
    heard_all = loop.create_future()

    def heard(payload: str) -> None:
        latencies.append(time.time() - float(json.loads(payload)["delta"]))
        if len(latencies) == events and not heard_all.done():
            heard_all.set_result(None)

    listener = Listener(
        database_url,
        {queries.FLOOR_NOTIFY_CHANNEL: heard},
        application_name="runstream-bench-floor-listen",
        ping_s=get_settings().listen_ping_s,
        on_listening=listening.set,
    )
    listen = asyncio.create_task(listener.run())
    writer = None
    try:
        await asyncio.wait_for(listening.wait(), timeout)
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runstream.bench.floor", "--events", str(events), "--rate", str(rate),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=child_environment(DATABASE_URL=database_url),
        )  # fmt: skip
        assert writer.stdin is not None and writer.stdout is not None
        json.loads(await writer.stdout.readline())  # its job row exists
        writer.stdin.write(b"go\n")
        await writer.stdin.drain()
        await asyncio.wait_for(heard_all, timeout)
        await writer.wait()
        return latencies
    finally:
        if writer is not None:
            if writer.returncode is None:
                writer.kill()
            await writer.wait()
        listen.cancel()
        with suppress(asyncio.CancelledError):
            await listen


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    args = parser.parse_args()
    loop = new_loop()  # the worker's kind of loop
    try:
        loop.run_until_complete(write(args.events, args.rate))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
