"""The printed table and the JSON file (``scenarios`` and ``targets``, as the README's bench section describes)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _n(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _latencies(figures: dict[str, Any]) -> str:
    return " / ".join(_n(figures[k]) for k in ("p50_ms", "p95_ms", "p99_ms") if k in figures)


def _rows(scenario: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    name, results = scenario["name"], scenario["results"]
    if name == "delivery":
        head = [
            "jobs x subscribers",
            "runstream p50/p95/p99 ms",
            "in-memory p50/p95/p99 ms",
            "x p50",
            "all delivered",
            "durable floor p50/p95/p99 ms",
            "web CPU us/delivery (mem)",
        ]
        rows = [
            [f"{r['jobs']} x {r['subscribers_per_job']}", _latencies(r["runstream"]), _latencies(r["baseline"]),
             _n(r["ratio"]["p50_ms"]), _n(r["runstream"]["all_delivered"]),
             _latencies(r["floor"]) if "floor" in r else "-",
             f"{_n(r['runstream']['cpu_us_per_delivery'])} ({_n(r['baseline']['cpu_us_per_delivery'])})"]
            for r in results
        ]  # fmt: skip
    elif name == "ingest":
        head = ["jobs", "runstream events/s", "raw INSERT events/s", "ratio"]
        rows = [
            [_n(r["jobs"]), _n(r["runstream"]["events_per_s"]), _n(r["baseline"]["events_per_s"]),
             _n(r["ratio"]["events_per_s"])]
            for r in results
        ]  # fmt: skip
    elif name == "fanout":
        head = ["subscribers", "runstream p50/p95/p99 ms", "in-memory p50/p95/p99 ms", "delivered",
                "RSS/sub KB (mem)", "PG conns", "web CPU us/delivery (mem)", "client CPU us/delivery",
                "kernel send floor us"]  # fmt: skip
        rows = [
            [_n(r["subscribers"]), _latencies(r["runstream"]), _latencies(r["baseline"]),
             _n(r["runstream"]["delivered_fraction"]),
             f"{_n(r['runstream']['rss_per_subscriber_kb'])} ({_n(r['baseline']['rss_per_subscriber_kb'])})",
             _n(r["runstream"]["postgres_connections"]),
             f"{_n(r['runstream']['cpu_us_per_delivery'])} ({_n(r['baseline']['cpu_us_per_delivery'])})",
             _n(r["runstream"]["client_cpu_us_per_delivery"]), _n(r["send_floor"]["send_us"])]
            for r in results
        ]  # fmt: skip
    elif name == "replay":
        head = ["events", "runstream events/s", "in-memory events/s", "ratio"]
        rows = [
            [_n(r["events"]), _n(r["runstream"]["events_per_s"]), _n(r["baseline"]["events_per_s"]),
             _n(r["ratio"]["events_per_s"])]
            for r in results
        ]  # fmt: skip
    elif name == "retention":
        head = ["events", "partition detach + drop s (detach)", "batched delete s (events)", "batched s for the month (extrapolated)",
                "month's job rows s"]  # fmt: skip
        rows = [
            [_n(r["events"]), f"{_n(r['runstream']['seconds'])} ({_n(r['runstream']['detach_seconds'])})",
             f"{_n(r['baseline']['seconds'])} ({_n(r['baseline']['events'])})",
             _n(r["baseline"]["seconds_for_month_events"]), _n(r["runstream"]["job_rows_seconds"])]
            for r in results
        ]  # fmt: skip
    else:  # job_start
        head = [
            "broker",
            "runstream p50/p95/p99 ms",
            "in-memory p50/p95/p99 ms",
            "x p50",
        ]
        rows = [
            [
                r["broker"] + (" (failed, see JSON)" if "error" in r else ""),
                _latencies(r["runstream"]),
                _latencies(r["baseline"]),
                _n(r["ratio"]["p50_ms"]),
            ]
            for r in results
        ]
    return head, rows


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(head, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    out = [f"runstream bench ({results['mode']}) — {results['machine']}"]
    for scenario in results["scenarios"]:
        out += [
            "",
            f"[{scenario['name']}] baseline: {scenario['baseline']}",
            _table(*_rows(scenario)),
        ]
    out += ["", "targets"]
    for t in results["targets"]:
        verdict = "PASS" if t["pass"] else "FAIL"
        out.append(f"  {verdict}  {t['name']}: {_n(t['value'])} {t['unit']} (target {t['op']} {_n(t['limit'])})")
        if "note" in t:
            out.append(f"        {t['note']}")
    return "\n".join(out)


def write_json(results: dict[str, Any], path: Path) -> None:
    # NaN is not JSON: a figure that could not be measured is null.
    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(results), indent=2) + "\n")
