"""``runstream bench [--quick] [--only NAME,..] [--fanout-subscribers N,..] [--json PATH] [--plot PATH]``.

Creates its own database on the ``DATABASE_URL`` server (dropped at the end),
starts one Runstream API and the in-memory baseline app, runs the scenarios one
after another (job start starts its own API and worker per broker), prints the
table, and writes the JSON (and the chart). ``--only`` runs some scenarios (for
work on one figure); ``--fanout-subscribers`` replaces the profile's fan-out levels.
"""

from __future__ import annotations

import importlib
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvloop

from runstream.bench import report
from runstream.bench.context import FULL, QUICK, Bench, BenchBrokers, Profile
from runstream.bench.scenarios import SCENARIO_NAMES
from runstream.bench.services import (
    NO_LIMITS,
    create_database,
    drop_database,
    start_api,
    start_baseline,
)
from runstream.core.settings import Settings, child_environment


def _machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.node()}, {os.cpu_count()} CPUs, load average {load}"


async def _run_scenarios(bench: Bench, only: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    scenarios, targets = [], []
    for name in SCENARIO_NAMES:
        if name not in only:
            continue
        module = importlib.import_module(f"runstream.bench.scenarios.{name}")
        started = time.monotonic()
        scenario, its_targets = await module.run(bench)
        scenario["seconds"] = round(time.monotonic() - started, 1)
        print(f"bench: {scenario['name']} done in {scenario['seconds']}s", flush=True)
        scenarios.append(scenario)
        targets += its_targets
    return scenarios, targets


def run(
    settings: Settings,
    *,
    quick: bool,
    only: tuple[str, ...] = SCENARIO_NAMES,
    fanout_subscribers: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    assert settings.database_url, "DATABASE_URL is not set"
    profile: Profile = QUICK if quick else FULL
    if fanout_subscribers:
        profile = replace(profile, fanout_subscribers=fanout_subscribers)
    brokers = BenchBrokers()
    started = time.monotonic()
    machine_before = _machine()
    database_url = create_database(settings.database_url)
    with tempfile.TemporaryDirectory(prefix="runstream-bench-") as work:
        work_dir = Path(work)
        env = (
            child_environment(
                DATABASE_URL=database_url,
                # The streaming scenarios never dispatch; the API still needs a broker to talk to.
                CELERY_BROKER_URL=brokers.redis_url,
                RUNSTREAM_QUEUE=f"rs-bench-{uuid.uuid4().hex[:12]}",
                RUNSTREAM_DATA_DIR=str(work_dir),
            )
            | NO_LIMITS
        )
        api = baseline = None
        try:
            api = start_api(env, work_dir)
            baseline = start_baseline(env, work_dir)
            bench = Bench(profile, settings, brokers, database_url, api, baseline, work_dir, env)
            scenarios, targets = uvloop.run(_run_scenarios(bench, only))
        finally:
            for service in (api, baseline):
                if service is not None:
                    service.stop()
            drop_database(settings.database_url, database_url)
    return {
        "mode": profile.name,
        "machine": f"{machine_before}; after: load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "seconds": round(time.monotonic() - started, 1),
        "scenarios": scenarios,
        "targets": targets,
    }


def main(
    settings: Settings,
    *,
    quick: bool,
    json_path: Path,
    plot_path: Path | None,
    only: tuple[str, ...] = SCENARIO_NAMES,
    fanout_subscribers: tuple[int, ...] | None = None,
) -> None:
    # SIGTERM (a CI timeout) unwinds like Ctrl-C: processes stopped, database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run(settings, quick=quick, only=only, fanout_subscribers=fanout_subscribers)
    print(report.render(results))
    report.write_json(results, json_path)
    print(f"\nbench: results in {json_path}")
    if plot_path is not None:
        from runstream.bench.plot import plot

        plot(results, plot_path)
        print(f"bench: chart in {plot_path}")
