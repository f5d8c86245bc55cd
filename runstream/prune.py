"""``runstream prune --older-than 30d [--yes]``: retention of finished jobs and their events.

Dry run by default: it says what would go, partition by partition (a month's
partition of the event log is dropped whole), and what is deleted job by job.
With ``--yes`` it does it (db.retention) and shows its progress.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from runstream.db.connector import open_pool
from runstream.db.retention import PruneCount, plan, prune


async def run_prune(database_url: str, older_than: timedelta, *, delete: bool, console: Console) -> PruneCount:
    """Answers what was deleted (or, in a dry run, what would be)."""
    cutoff = datetime.now(UTC) - older_than
    pool = await open_pool(database_url, 1, name="runstream-prune")
    try:
        prune_plan = await plan(pool, cutoff)
        for count in prune_plan.partitions:
            verdict = "drop" if count.droppable else f"keep ({count.keeping} jobs unfinished or finished since)"
            console.print(
                f"partition {count.partition.describe()}: {count.jobs} jobs, {count.events} events: {verdict}",
                soft_wrap=True,
            )
        outside = prune_plan.outside
        console.print(
            f"outside partitions, deleted in batches: {outside.jobs} jobs, {outside.events} events", soft_wrap=True
        )
        planned = prune_plan.total
        console.print(
            f"finished jobs older than {cutoff.isoformat(timespec='seconds')}: "
            f"{planned.jobs} jobs, {planned.events} events"
        )
        if not delete:
            console.print("dry run: nothing deleted (add --yes to delete)")
            return planned
        jobs = events = 0
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            events_task = progress.add_task("events", total=planned.events)
            jobs_task = progress.add_task("jobs", total=planned.jobs)
            async for batch in prune(pool, cutoff):
                jobs += batch.jobs
                events += batch.events
                progress.update(events_task, completed=events)
                progress.update(jobs_task, completed=jobs)
        console.print(f"deleted {jobs} jobs and {events} events")
        return PruneCount(jobs, events)
    finally:
        await pool.close()


def prune_command(database_url: str, older_than: timedelta, *, delete: bool) -> PruneCount:
    return asyncio.run(run_prune(database_url, older_than, delete=delete, console=Console()))
