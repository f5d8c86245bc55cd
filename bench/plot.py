"""``--plot PATH``: one PNG, a panel per scenario, Runstream next to its baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to a file

import matplotlib.pyplot as plt

OURS, THEIRS = "#1f77b4", "#aaaaaa"


def _by_name(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {s["name"]: s["results"] for s in results["scenarios"]}


def _bars(ax: Any, labels: list[str], ours: list[float], theirs: list[float], baseline: str) -> None:
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], ours, 0.4, color=OURS, label="Runstream")
    ax.bar([x + 0.2 for x in xs], theirs, 0.4, color=THEIRS, label=baseline)
    ax.set_xticks(list(xs), labels)
    ax.legend(fontsize=8)


def plot(results: dict[str, Any], path: Path) -> None:
    data = _by_name(results)
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    (delivery, ingest, fanout, retention), (fan_mem, replay, start, spare) = axes
    spare.axis("off")

    rows = data["delivery"]
    labels = [f"{r['jobs']} job" + ("s" if r["jobs"] != 1 else "") for r in rows]
    _bars(
        delivery,
        labels,
        [r["runstream"]["p99_ms"] for r in rows],
        [r["baseline"]["p99_ms"] for r in rows],
        "in-memory",
    )
    p50_lines = (
        ("runstream", "o-", "navy", "Runstream p50"),
        ("baseline", "o--", "dimgray", "in-memory p50"),
    )
    for side, style, color, label in p50_lines:
        p50s = [r[side]["p50_ms"] for r in rows]
        delivery.plot(labels, p50s, style, color=color, label=label)
    floors = [(lab, r["floor"]["p50_ms"]) for lab, r in zip(labels, rows, strict=True) if "floor" in r]
    if floors:
        delivery.plot(*zip(*floors, strict=True), "D", color="darkred", label="durable floor p50")
    # Log scale: sub-millisecond figures at 1 job beside tens of ms at 200.
    delivery.set_yscale("log")
    delivery.set_title("delivery latency p99 (bars), ms, log scale")
    delivery.legend(fontsize=8)

    rows = data["ingest"]
    _bars(ingest, [str(r["jobs"]) for r in rows], [r["runstream"]["events_per_s"] for r in rows],
          [r["baseline"]["events_per_s"] for r in rows], "raw INSERT")  # fmt: skip
    ingest.set_title("ingest, events/s, by concurrent jobs")

    rows = data["fanout"]
    labels = [f"{r['subscribers']:,}" for r in rows]
    _bars(
        fanout,
        labels,
        [r["runstream"]["p99_ms"] for r in rows],
        [r["baseline"]["p99_ms"] for r in rows],
        "in-memory",
    )
    fanout.set_title("fan-out delivery p99, ms, by subscribers")
    _bars(fan_mem, labels, [r["runstream"]["rss_per_subscriber_kb"] for r in rows],
          [r["baseline"]["rss_per_subscriber_kb"] for r in rows], "in-memory")  # fmt: skip
    fan_mem.set_title("fan-out: API RSS per subscriber, KB")

    rows = data["replay"]
    _bars(replay, ["replay"], [r["runstream"]["events_per_s"] for r in rows],
          [r["baseline"]["events_per_s"] for r in rows], "in-memory")  # fmt: skip
    replay.set_title(f"replay of {rows[0]['events']:,} events, events/s")

    rows = data["job_start"]
    _bars(start, [r["broker"] for r in rows], [r["runstream"]["p50_ms"] for r in rows],
          [r["baseline"]["p50_ms"] for r in rows], "in-memory")  # fmt: skip
    start.set_title("job start → first event p50, ms")

    rows = data["retention"]
    _bars(retention, [f"{r['events']:,} events" for r in rows], [r["runstream"]["seconds"] for r in rows],
          [r["baseline"]["seconds_for_month_events"] for r in rows], "batched delete (extrapolated)")  # fmt: skip
    retention.set_yscale("log")
    retention.set_title("retention: a month of events, seconds, log scale")

    fig.suptitle(f"runstream bench ({results['mode']}): {results['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
