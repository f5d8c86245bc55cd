"""``runstream stats``: the analytics summary (as ``GET /api/analytics/summary``) as terminal tables."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from runstream.db.analytics import Scope, summary
from runstream.db.connector import open_pool


async def fetch_summary(database_url: str, scope: Scope) -> dict[str, Any]:
    pool = await open_pool(database_url, 1, name="runstream-stats")
    try:
        return await summary(pool, scope)
    finally:
        await pool.close()


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _when(value: datetime | None) -> str:
    return value.isoformat() if value else "any"


def render(scope: Scope, result: dict[str, Any], console: Console) -> None:
    console.print(
        f"tenant {scope.tenant}, jobs created from {_when(scope.since)} until {_when(scope.until)}"
        + (f", session {scope.session_id}" if scope.session_id else "")
        + (f", agent {scope.agent}" if scope.agent else "")
    )
    statuses = Table(title="jobs by status")
    for name in (*result["by_status"], "total", "retried", "retry rate"):
        statuses.add_column(name, justify="right")
    statuses.add_row(
        *(str(n) for n in result["by_status"].values()),
        str(result["jobs"]),
        str(result["retried_jobs"]),
        _rate(result["retry_rate"]),
    )
    console.print(statuses)

    timings = Table(title="timings (seconds)")
    for name, justify in (("measure", "left"), ("jobs", "right"), ("p50", "right"), ("p95", "right")):
        timings.add_column(name, justify=justify)  # type: ignore[arg-type]
    for label, key in (
        ("queue wait", "queue_wait_s"),
        ("time to first token", "ttft_s"),
        ("duration", "duration_s"),
        ("paused for a person", "paused_s"),
    ):
        figures = result[key]
        timings.add_row(label, str(figures["count"]), _seconds(figures["p50"]), _seconds(figures["p95"]))
    console.print(timings)

    tools = Table(title="top tools")
    for name, justify in (("tool", "left"), ("calls", "right"), ("errors", "right"), ("error rate", "right")):
        tools.add_column(name, justify=justify)  # type: ignore[arg-type]
    for tool in result["tools"]:
        tools.add_row(tool["tool_name"], str(tool["calls"]), str(tool["errors"]), _rate(tool["error_rate"]))
    console.print(tools)

    agents = Table(title="jobs by agent")
    for name, justify in (
        ("agent", "left"), ("jobs", "right"), ("completed", "right"), ("failed", "right"),
        ("cancelled", "right"), ("duration p50", "right"),
    ):  # fmt: skip
        agents.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in result["by_agent"]:
        agents.add_row(
            row["agent"] or "(none recorded)", str(row["jobs"]), str(row["completed"]), str(row["failed"]),
            str(row["cancelled"]), _seconds(row["duration_p50_s"]),
        )  # fmt: skip
    console.print(agents)


def run_stats(database_url: str, scope: Scope, console: Console | None = None) -> None:
    render(scope, asyncio.run(fetch_summary(database_url, scope)), console or Console())
