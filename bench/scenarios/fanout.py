"""Fan-out: N subscribers of one job on ONE API process; every one gets every event.

Reports the delivery latency over all subscribers, the API's memory per
subscriber (RSS with the N streams open minus RSS before they opened) and the
API's Postgres connections with the N streams open, which must not depend on N.
Baseline: the same N subscribers on the in-memory recipe.

Each level runs on a fresh API and a fresh recipe: in a process that already
served a larger level, new streams reuse memory freed by the old ones, and RSS
per subscriber would read low. Each level also measures the kernel's own price
of a delivery on this machine (``bench.send_floor``): the floor under the web
CPU per delivery, whatever the server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from runstream.bench.context import Bench, target
from runstream.bench.rounds import BaselineSide, RunstreamSide
from runstream.bench.services import Service, api_connection_count, start_api, start_baseline
from runstream.bench.stats import latency_summary, ratio

# Rounds of the send floor: enough for a steady figure, short next to the level.
SEND_FLOOR_ROUNDS = 20


async def _measure(side: RunstreamSide | BaselineSide, process: Service, n: int, bench: Bench) -> dict[str, Any]:
    profile = bench.profile
    seen: dict[str, float] = {}
    rss_before = process.rss_bytes()

    def connected() -> None:
        seen["rss"] = process.rss_bytes()
        seen["cpu"] = process.cpu_seconds()
        seen["client_cpu"] = time.process_time()
        if isinstance(side, RunstreamSide):
            seen["connections"] = api_connection_count(bench.database_url, process.pid)

    result = await side.round(
        jobs=1,
        subscribers=n,
        events=profile.fanout_events,
        rate=profile.fanout_rate,
        timeout=profile.fanout_events / profile.fanout_rate + 120,
        on_connected=connected,
    )
    cpu_s = process.cpu_seconds() - seen["cpu"]
    client_cpu_s = time.process_time() - seen["client_cpu"]
    deliveries = n * profile.fanout_events
    figures: dict[str, Any] = {
        **latency_summary(result.latencies),
        "delivered_fraction": sum(s.stamps == result.events_per_job and s.in_order for s in result.streams) / n,
        "rss_per_subscriber_kb": round((seen["rss"] - rss_before) / n / 1024, 1),
        # The web process's CPU per (subscriber, event) sent: the fan-out cost curve.
        "cpu_us_per_delivery": round(cpu_s * 1e6 / deliveries, 2),
        "cpu_seconds": round(cpu_s, 2),
        # The bench's own SSE client, on the same cores: what it takes from the server.
        "client_cpu_us_per_delivery": round(client_cpu_s * 1e6 / deliveries, 2),
    }
    if "connections" in seen:
        figures["postgres_connections"] = seen["connections"]
    return figures


async def _send_floor(n: int, interval: float) -> dict[str, float]:
    floor = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runstream.bench.send_floor",
        "--subscribers", str(n), "--rounds", str(SEND_FLOOR_ROUNDS), "--interval", str(interval),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await floor.communicate()
    if floor.returncode != 0:
        raise RuntimeError(f"bench.send_floor --subscribers {n} exited with {floor.returncode}")
    figures: dict[str, float] = json.loads(out)
    return figures


async def _level(bench: Bench, n: int) -> dict[str, Any]:
    api = await asyncio.to_thread(start_api, bench.env, bench.work_dir, f"api-fanout-{n}")
    try:
        ours = await _measure(RunstreamSide(api, bench.database_url), api, n, bench)
    finally:
        api.stop()
    recipe = await asyncio.to_thread(start_baseline, bench.env, bench.work_dir, f"baseline-fanout-{n}")
    try:
        theirs = await _measure(BaselineSide(recipe), recipe, n, bench)
    finally:
        recipe.stop()
    return {
        "subscribers": n,
        "runstream": ours,
        "baseline": theirs,
        "ratio": {k: ratio(ours[k], theirs[k]) for k in ("p50_ms", "p99_ms", "rss_per_subscriber_kb")},
        "send_floor": await _send_floor(n, 1 / bench.profile.fanout_rate),
    }


def _floor_note(row: dict[str, Any], rate: float) -> str:
    n, floor = row["subscribers"], row["send_floor"]
    core_share = n * rate * floor["send_us"] / 1e6
    return (
        f"kernel floor in this run: one frame-sized send to each of {n:,} waiting loopback clients costs "
        f"{floor['send_us']:.3g} us of the sender's CPU (and {floor['read_us']:.3g} us to read), so {n:,} "
        f"subscribers x {rate:g} events/s take {core_share:.0%} of the API's one core in sends alone; "
        f"the API spent {row['runstream']['cpu_us_per_delivery']:.3g} us per delivery in all"
    )


async def run(bench: Bench) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    results = [await _level(bench, n) for n in bench.profile.fanout_subscribers]
    rate = bench.profile.fanout_rate
    at = {row["subscribers"]: row for row in results}
    connections = [row["runstream"]["postgres_connections"] for row in results]
    targets = [
        target("fanout", "API Postgres connections: growth from fewest to most subscribers",
               max(connections) - min(connections), "connections", "<=", 0),
    ]  # fmt: skip
    if (big := at.get(2000)) is not None:
        targets += [
            target("fanout", "fan-out 2,000: fraction of subscribers with every event",
                   big["runstream"]["delivered_fraction"], "", ">=", 1.0),
            target("fanout", "fan-out 2,000: delivery p99", big["runstream"]["p99_ms"], "ms", "<=", 250),
        ]  # fmt: skip
    if (huge := at.get(10000)) is not None:  # the full run only: 10,000 streams take minutes
        targets += [
            target("fanout", "fan-out 10,000: fraction of subscribers with every event",
                   huge["runstream"]["delivered_fraction"], "", ">=", 1.0),
            target("fanout", "fan-out 10,000: delivery p99", huge["runstream"]["p99_ms"], "ms", "<=", 250,
                   note=_floor_note(huge, rate)),
            target("fanout", "fan-out 10,000: API RSS per subscriber (fresh API)",
                   huge["runstream"]["rss_per_subscriber_kb"], "KB", "<=", 20),
        ]  # fmt: skip
    scenario = {
        "name": "fanout",
        "unit": "ms",
        "events": bench.profile.fanout_events,
        "events_per_s": rate,
        "baseline": "in-memory recipe, the same subscribers (each level on a fresh API and a fresh recipe)",
        "results": results,
    }
    return scenario, targets
