"""Delivery latency: agent yields an event → an SSE client has parsed it.

Runstream: ``bench.producer`` (the worker's EventWriter) → Postgres → NOTIFY →
API hub → SSE. Baseline: the in-memory recipe, its run inside the web process.
Each job streams 50 events/s; two subscribers per job, one at 200 jobs.

At 1 job the run also measures the durable floor (``bench.floor``): the same
schedule written by a bare INSERT + NOTIFY and heard on a LISTEN connection,
with no Runstream code and no API or client hop. It bounds from below what any
design that commits an event before delivering it can reach on this machine,
and so says how much of the gap to the in-memory recipe is Runstream's own.
"""

from __future__ import annotations

from typing import Any

from runstream.bench.context import Bench, target
from runstream.bench.floor import floor_round
from runstream.bench.rounds import BaselineSide, Round, RunstreamSide
from runstream.bench.services import Service
from runstream.bench.stats import latency_summary, ratio


def _figures(result: Round) -> dict[str, Any]:
    return {**latency_summary(result.latencies), "all_delivered": result.all_delivered}


async def _measure(
    side: RunstreamSide | BaselineSide, process: Service, spec: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """The round's latencies, and the web process's CPU per (subscriber, event) sent."""
    cpu: dict[str, float] = {}

    def connected() -> None:
        cpu["start"] = process.cpu_seconds()

    result = await side.round(**spec, timeout=timeout, on_connected=connected)
    cpu_s = process.cpu_seconds() - cpu["start"]
    deliveries = spec["jobs"] * spec["subscribers"] * spec["events"]
    return {**_figures(result), "cpu_us_per_delivery": round(cpu_s * 1e6 / deliveries, 2)}


async def run(bench: Bench) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    profile = bench.profile
    sides = (RunstreamSide(bench.api, bench.database_url), BaselineSide(bench.baseline))
    for side in sides:  # warm-up: connections, caches
        await side.round(jobs=1, subscribers=1, events=10, rate=profile.delivery_rate, timeout=30)
    events = int(profile.delivery_rate * profile.delivery_seconds)
    timeout = profile.delivery_seconds + 60
    results: list[dict[str, Any]] = []
    for jobs in profile.delivery_jobs:
        subscribers = 2 if jobs <= 50 else 1
        spec: dict[str, Any] = {
            "jobs": jobs,
            "subscribers": subscribers,
            "events": events,
            "rate": profile.delivery_rate,
        }
        ours = await _measure(sides[0], bench.api, spec, timeout)
        theirs = await _measure(sides[1], bench.baseline, spec, timeout)
        results.append(
            {
                "jobs": jobs,
                "subscribers_per_job": subscribers,
                "events_per_s": jobs * profile.delivery_rate,
                "runstream": ours,
                "baseline": theirs,
                "ratio": {k: ratio(ours[k], theirs[k]) for k in ("p50_ms", "p95_ms", "p99_ms")},
            }
        )
    at = {row["jobs"]: row for row in results}
    floor_note = None
    over_floor = float("nan")
    if 1 in at:
        one = at[1]
        floor = latency_summary(
            await floor_round(
                bench.database_url,
                events=events,
                rate=profile.delivery_rate,
                timeout=timeout,
            )
        )
        floor_ratio = ratio(floor["p50_ms"], one["baseline"]["p50_ms"])
        one["floor"] = floor
        over_floor = ratio(one["runstream"]["p50_ms"], floor["p50_ms"])
        one["floor_ratio"] = {"p50_ms": floor_ratio, "runstream_over_floor_p50": over_floor}
        floor_note = (
            "durable floor at 1 job (INSERT + NOTIFY heard by LISTEN, no Runstream code, "
            f"no API or client hop): p50 {floor['p50_ms']:.3g} ms, {floor_ratio:.3g} x the in-memory p50"
        )
    targets = [
        target(
            "delivery",
            "delivery p50 at 50 jobs",
            at[50]["runstream"]["p50_ms"],
            "ms",
            "<=",
            15,
        ),
        target(
            "delivery",
            "delivery p99 at 50 jobs",
            at[50]["runstream"]["p99_ms"],
            "ms",
            "<=",
            60,
        ),
        target(
            "delivery",
            "delivery p50 at 1 job / in-memory p50",
            at[1]["ratio"]["p50_ms"],
            "x",
            "<=",
            5,
            note=floor_note,
        ),
        # What a durable design can be held to: the floor measured in this run.
        target("delivery", "delivery p50 at 1 job / durable floor p50", over_floor, "x", "<=", 1.5),
        target("delivery", "delivery p99 at 200 jobs", at[200]["runstream"]["p99_ms"], "ms", "<=", 20),
    ]
    scenario = {
        "name": "delivery",
        "unit": "ms",
        "baseline": "in-memory recipe (dict of jobs, asyncio.Condition per job), same Starlette/uvicorn",
        "results": results,
    }
    return scenario, targets
