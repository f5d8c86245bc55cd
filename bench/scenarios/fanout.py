"""Fan-out: N subscribers of one job on ONE API process; every one gets every event.

Reports the delivery latency over all subscribers, the API's memory per
subscriber (RSS with the N streams open minus RSS before they opened) and the
API's Postgres connections with the N streams open, which must not depend on N.
Baseline: the same N subscribers on the in-memory recipe.
"""

from __future__ import annotations

from typing import Any

from runstream.bench.context import Bench, target
from runstream.bench.rounds import BaselineSide, RunstreamSide
from runstream.bench.services import Service, api_connection_count
from runstream.bench.stats import latency_summary, ratio


async def _measure(side: RunstreamSide | BaselineSide, process: Service, n: int, bench: Bench) -> dict[str, Any]:
    profile = bench.profile
    seen: dict[str, float] = {}
    rss_before = process.rss_bytes()

    def connected() -> None:
        seen["rss"] = process.rss_bytes()
        seen["cpu"] = process.cpu_seconds()
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
    figures: dict[str, Any] = {
        **latency_summary(result.latencies),
        "delivered_fraction": sum(s.stamps == result.events_per_job and s.in_order for s in result.streams) / n,
        "rss_per_subscriber_kb": round((seen["rss"] - rss_before) / n / 1024, 1),
        # The web process's CPU per (subscriber, event) sent: the fan-out cost curve.
        "cpu_us_per_delivery": round(cpu_s * 1e6 / (n * profile.fanout_events), 2),
        "cpu_seconds": round(cpu_s, 2),
    }
    if "connections" in seen:
        figures["postgres_connections"] = seen["connections"]
    return figures


async def run(bench: Bench) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ours_side, base_side = (
        RunstreamSide(bench.api, bench.database_url),
        BaselineSide(bench.baseline),
    )
    results: list[dict[str, Any]] = []
    for n in bench.profile.fanout_subscribers:
        ours = await _measure(ours_side, bench.api, n, bench)
        theirs = await _measure(base_side, bench.baseline, n, bench)
        results.append(
            {
                "subscribers": n,
                "runstream": ours,
                "baseline": theirs,
                "ratio": {k: ratio(ours[k], theirs[k]) for k in ("p50_ms", "p99_ms", "rss_per_subscriber_kb")},
            }
        )
    at = {row["subscribers"]: row["runstream"] for row in results}
    connections = [row["runstream"]["postgres_connections"] for row in results]
    big = at.get(2000, {"delivered_fraction": float("nan"), "p99_ms": float("nan")})
    targets = [
        target("fanout", "fan-out 2,000: fraction of subscribers with every event", big["delivered_fraction"], "", ">=", 1.0),
        target("fanout", "fan-out 2,000: delivery p99", big["p99_ms"], "ms", "<=", 250),
        target("fanout", "API Postgres connections: growth from fewest to most subscribers",
               max(connections) - min(connections), "connections", "<=", 0),
    ]  # fmt: skip
    if (huge := at.get(10000)) is not None:  # the full run only: 10,000 streams take minutes
        targets += [
            target("fanout", "fan-out 10,000: fraction of subscribers with every event",
                   huge["delivered_fraction"], "", ">=", 1.0),
            target("fanout", "fan-out 10,000: delivery p99", huge["p99_ms"], "ms", "<=", 250),
            target("fanout", "fan-out 10,000: API RSS per subscriber", huge["rss_per_subscriber_kb"], "KB", "<=", 20),
        ]  # fmt: skip
    scenario = {
        "name": "fanout",
        "unit": "ms",
        "events": bench.profile.fanout_events,
        "events_per_s": bench.profile.fanout_rate,
        "baseline": "in-memory recipe, the same subscribers",
        "results": results,
    }
    return scenario, targets
