"""What every scenario gets: the run's profile, and the services it runs against."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from runstream.bench.services import Service
from runstream.core.settings import Settings


@dataclass(frozen=True)
class Profile:
    name: str
    # delivery: stamped jobs at 50 events/s each, for this long per level
    delivery_jobs: tuple[int, ...]
    delivery_seconds: float
    # ingest: writers appending as fast as they can, for this long per level and side
    ingest_jobs: tuple[int, ...]
    ingest_seconds: float
    # fan-out: subscribers of one job streaming ``fanout_events`` at ``fanout_rate``
    fanout_subscribers: tuple[int, ...]
    fanout_events: int
    # replay: a job of this many events, read from the start
    replay_events: int
    # job start: measured jobs per broker (after a few unmeasured warm-up ones)
    job_starts: int
    # retention: events of one month's partition (dropped), and events deleted
    # the batched way (outside partitions) for the comparison
    retention_events: int
    retention_batched_events: int
    delivery_rate: float = 50.0
    fanout_rate: float = 10.0


QUICK = Profile(
    name="quick",
    delivery_jobs=(1, 50, 200),
    delivery_seconds=1.5,
    ingest_jobs=(1, 8, 64, 256),
    ingest_seconds=0.8,
    fanout_subscribers=(100, 1000, 2000),
    fanout_events=20,
    replay_events=100_000,
    job_starts=8,
    retention_events=200_000,
    retention_batched_events=20_000,
)
FULL = Profile(
    name="full",
    delivery_jobs=(1, 50, 200),
    delivery_seconds=10.0,
    ingest_jobs=(1, 8, 64, 256),
    ingest_seconds=6.0,
    fanout_subscribers=(100, 1000, 2000, 5000, 10000),
    fanout_events=100,
    replay_events=100_000,
    job_starts=100,
    retention_events=10_000_000,
    retention_batched_events=1_000_000,
)


class BenchBrokers(BaseSettings):
    """The brokers ``runstream bench`` measures job start with (besides the
    filesystem one): the bench's own settings, apart from Runstream's."""

    model_config = SettingsConfigDict(env_prefix="RUNSTREAM_BENCH_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672//"


@dataclass
class Bench:
    profile: Profile
    settings: Settings
    brokers: BenchBrokers
    database_url: str
    api: Service  # the Runstream API the streaming scenarios use
    baseline: Service  # the in-memory recipe
    work_dir: Path  # logs and the filesystem broker's folders
    env: dict[str, str]  # the environment the API and the recipe run in (for fresh ones)


def target(
    group: str,
    name: str,
    value: float,
    unit: str,
    op: str,
    limit: float,
    note: str | None = None,
) -> dict[str, Any]:
    """One target of the issue; ``op`` says which side of ``limit`` passes. A figure
    that could not be measured (NaN) fails. ``note``: what else the run measured
    that bears on it (printed under it)."""
    passed = not math.isnan(value) and (value <= limit if op == "<=" else value >= limit)
    return {
        "group": group,
        "name": name,
        "value": value,
        "unit": unit,
        "op": op,
        "limit": limit,
        "pass": passed,
        **({"note": note} if note else {}),
    }
