"""``runstream bench --quick`` end to end: every scenario measured, with its baseline.

Timing is not a test (the machine is shared): this checks the shape and that
every figure was measured, not whether the targets pass.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from runstream.core.settings import child_environment
from tests.support.config import services

RUNSTREAM = str(Path(sys.executable).with_name("runstream"))
SCENARIOS = {"delivery", "ingest", "fanout", "replay", "job_start", "retention"}
# Every scenario's own figures and its baseline's, by the key they are reported under.
FIGURES = {
    "delivery": ("p50_ms", "p95_ms", "p99_ms"),
    "ingest": ("events_per_s",),
    "fanout": ("p50_ms", "p99_ms"),
    "replay": ("events_per_s",),
    "job_start": ("p50_ms", "p99_ms"),
    "retention": ("events_per_s",),
}


def bench(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``runstream bench ARGS``, its output captured."""
    return subprocess.run(
        [RUNSTREAM, "bench", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_quick_bench_reports_every_scenario_against_its_baseline(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench.json"
    env = child_environment(
        DATABASE_URL=services.admin_database_url,
        RUNSTREAM_BENCH_REDIS_URL=services.redis_url,
        RUNSTREAM_BENCH_RABBITMQ_URL=services.rabbitmq_url,
    )
    done = bench("--quick", "--json", str(out), env=env, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS" in done.stdout or "FAIL" in done.stdout

    results = json.loads(out.read_text())
    scenarios = {s["name"]: s for s in results["scenarios"]}
    assert set(scenarios) == SCENARIOS
    for name, scenario in scenarios.items():
        assert scenario["baseline"], name
        assert scenario["results"], name
        for row in scenario["results"]:
            for key in FIGURES[name]:
                assert positive(row["runstream"][key]), (name, key, row)
                assert positive(row["baseline"][key]), (name, key, row)
                assert positive(row["ratio"][key]), (name, key, row)

    assert [r["subscribers"] for r in scenarios["fanout"]["results"]] == [
        100,
        1000,
        2000,
    ]
    for row in scenarios["fanout"]["results"]:
        assert row["runstream"]["postgres_connections"] > 0
        assert row["runstream"]["delivered_fraction"] is not None
        # A difference of two RSS readings: at 100 subscribers it can be 0 or below.
        assert isinstance(row["runstream"]["rss_per_subscriber_kb"], int | float)
        assert isinstance(row["baseline"]["rss_per_subscriber_kb"], int | float)
        # The kernel's price of a delivery, measured beside each level; and the client's.
        assert positive(row["send_floor"]["send_us"]) and positive(row["send_floor"]["read_us"]), row
        assert positive(row["runstream"]["client_cpu_us_per_delivery"]), row
    assert {r["broker"] for r in scenarios["job_start"]["results"]} == {
        "redis",
        "rabbitmq",
        "filesystem",
    }
    assert [r["jobs"] for r in scenarios["ingest"]["results"]] == [1, 8, 64, 256]
    assert [r["jobs"] for r in scenarios["delivery"]["results"]] == [1, 50, 200]
    # The durable floor is measured at 1 job, in the same run, and reported with the 1-job target.
    one_job = scenarios["delivery"]["results"][0]
    for key in FIGURES["delivery"]:
        assert positive(one_job["floor"][key]), (key, one_job["floor"])
    assert one_job["floor"]["samples"] == one_job["runstream"]["samples"] // 2
    assert positive(one_job["floor_ratio"]["p50_ms"]), one_job
    [one_job_target] = [t for t in results["targets"] if t["name"] == "delivery p50 at 1 job / in-memory p50"]
    assert "durable floor" in one_job_target["note"], one_job_target

    [month] = scenarios["retention"]["results"]
    assert month["events"] == 200_000 and month["baseline"]["events"] == 20_000
    assert positive(month["runstream"]["seconds"]) and positive(month["baseline"]["seconds_for_month_events"])
    target_names = {t["name"] for t in results["targets"]}
    assert {"delivery p50 at 1 job / durable floor p50", "delivery p99 at 200 jobs",
            "ingest at 64 jobs / raw-insert limit (scale target)",
            "retention: drop a month of 200,000 events"} <= target_names  # fmt: skip
    assert positive(one_job["floor_ratio"]["runstream_over_floor_p50"]), one_job

    targets = results["targets"]
    assert {t["group"] for t in targets} == SCENARIOS
    for t in targets:
        assert set(t) >= {"name", "value", "unit", "limit", "pass"}, t
        assert isinstance(t["pass"], bool) and isinstance(t["limit"], int | float), t
        assert isinstance(t["value"], int | float), t


def test_bench_only_runs_the_named_scenarios_at_the_given_fanout_levels(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = child_environment(DATABASE_URL=services.admin_database_url)
    done = bench(
        "--quick", "--only", "fanout", "--fanout-subscribers", "10,20", "--json", str(out), env=env, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    [fanout] = results["scenarios"]
    assert fanout["name"] == "fanout"
    assert [row["subscribers"] for row in fanout["results"]] == [10, 20]
    assert all(row["runstream"]["delivered_fraction"] == 1 for row in fanout["results"])
    # Targets stand for the levels measured: none for 2,000 or 10,000 here.
    assert [t["name"] for t in results["targets"]] == [
        "API Postgres connections: growth from fewest to most subscribers"
    ]


def test_bench_refuses_an_unknown_scenario_before_it_starts_anything() -> None:
    done = bench(
        "--only", "fanout,warp", env=child_environment(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"), timeout=30
    )
    assert done.returncode == 2, done.stderr
    assert "unknown scenario warp (known: delivery, ingest, fanout, replay, job_start, retention)" in done.stderr
