"""The ``runstream`` console script. Each command reads the settings from the environment.

Each command imports what it runs when it runs: a worker never loads the web
stack, ``runstream --version`` loads neither, and none waits on Agno's import.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from runstream import __version__
from runstream.bench.scenarios import SCENARIO_NAMES
from runstream.core.durations import parse_duration
from runstream.core.settings import Settings, SettingsError, get_settings


def _scenario_names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if unknown := [name for name in names if name not in SCENARIO_NAMES]:
        raise argparse.ArgumentTypeError(f"unknown scenario {', '.join(unknown)} (known: {', '.join(SCENARIO_NAMES)})")
    if not names:
        raise argparse.ArgumentTypeError("name at least one scenario")
    return names


def _subscriber_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError("subscriber counts must be at least 1")
    return counts


def require_database_url(settings: Settings) -> str:
    if not settings.database_url:
        sys.exit("runstream: DATABASE_URL is not set (or use `runstream dev`, which embeds Postgres).")
    return settings.database_url


def cmd_migrate(args: argparse.Namespace) -> None:
    from runstream.db.migrate import upgrade_to_head

    upgrade_to_head(require_database_url(get_settings()))
    print("runstream: database is at the newest schema")


def cmd_api(args: argparse.Namespace) -> None:
    from runstream.api.auth import open_bind_refusal

    # Open (no API keys) beyond this machine only when asked for: docs/security.md.
    refusal = open_bind_refusal(get_settings(), args.host)
    if refusal:
        sys.exit(refusal)
    from runstream.api.app import create_app
    from runstream.api.protocol import HeadLimits
    from runstream.api.server import serve
    from runstream.core.logs import configure_logging

    settings = get_settings()
    require_database_url(settings)
    configure_logging(settings)
    serve(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        trust_proxy_headers=settings.trust_proxy_headers,
        shutdown_grace_s=settings.shutdown_grace_s,
        head_limits=HeadLimits(settings.max_url_bytes, settings.max_header_bytes, settings.max_headers),
    )


# The Celery pools a worker may run. Every run of a process goes to its one event
# loop (tasks.runtime), which the task threads share: a process pool would build
# a runtime in the parent and each child (a forked loop is dead), and a warm
# shutdown would reach the parent, which holds no runs; eventlet and gevent
# would patch the threads the loop runs on.
SUPPORTED_POOLS = ("threads", "solo")


def cmd_worker(args: argparse.Namespace) -> None:
    if args.pool not in SUPPORTED_POOLS:
        sys.exit(f"runstream: worker pool {args.pool!r} is not supported: use threads (the default) or solo")
    require_database_url(get_settings())
    from runstream.tasks.registry import RegistryError, get_registry

    # Every agent resolves before the worker takes a job, or it does not start.
    try:
        get_registry()
    except RegistryError as exc:
        sys.exit(f"runstream: RUNSTREAM_AGENTS: {exc}")
    from celery.bin.celery import celery as celery_command

    # As `celery -A ... worker`, which exits with the worker's exit code: a worker
    # that stops on an unrecoverable error must exit non-zero, so that its supervisor
    # (systemd, Kubernetes, compose) starts it again. (celery_app.worker_main drops
    # that code and returns normally.)
    celery_command.main(
        [
            "-A",
            "runstream.tasks.celery_app:celery_app",
            "worker",
            "--loglevel=INFO",
            f"--pool={args.pool}",
            *args.celery_args,
        ],
        prog_name="runstream",
    )


def cmd_dev(args: argparse.Namespace) -> None:
    from runstream.dev import main as dev_main

    sys.exit(dev_main(args.host, args.port))


def cmd_stats(args: argparse.Namespace) -> None:
    from runstream.db.analytics import Scope
    from runstream.stats import run_stats

    now = datetime.now(UTC)
    scope = Scope(
        tenant=args.tenant,
        since=now - args.since if args.since else None,
        until=now - args.until if args.until else None,
        session_id=args.session_id,
        agent=args.agent,
    )
    run_stats(require_database_url(get_settings()), scope)


def cmd_prune(args: argparse.Namespace) -> None:
    from runstream.prune import prune_command

    prune_command(require_database_url(get_settings()), args.older_than, delete=args.yes)


def cmd_rotate_secret(args: argparse.Namespace) -> None:
    import asyncio

    from runstream.db.connector import open_pool
    from runstream.db.secrets import KEEP, rotate_stream_secret

    async def rotate(database_url: str) -> None:
        pool = await open_pool(database_url, 1, name="runstream-rotate-secret")
        try:
            await rotate_stream_secret(pool)
        finally:
            await pool.close()

    asyncio.run(rotate(require_database_url(get_settings())))
    print(
        f"runstream: a new stream-token key is in place; the newest {KEEP} stay valid. "
        "Restart the API processes to sign with it."
    )


def cmd_bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from runstream.bench.main import main as bench_main

    settings = get_settings()
    require_database_url(settings)
    bench_main(
        settings,
        quick=args.quick,
        json_path=Path(args.json),
        plot_path=Path(args.plot) if args.plot else None,
        only=args.only,
        fanout_subscribers=args.fanout_subscribers,
    )


def cmd_soak(args: argparse.Namespace) -> None:
    from pathlib import Path

    from runstream.bench.soak import SoakOptions
    from runstream.bench.soak import main as soak_main

    sys.exit(
        soak_main(
            SoakOptions(
                seed=args.seed,
                jobs=args.jobs,
                duration_s=args.duration,
                apis=args.apis,
                workers=args.workers,
                log_dir=Path(args.log_dir) if args.log_dir else None,
            )
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runstream", description=__doc__)
    parser.add_argument("--version", action="version", version=f"runstream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run Postgres (embedded unless DATABASE_URL), a worker and the API")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(func=cmd_dev)

    api = commands.add_parser("api", help="serve the HTTP API and the chat page")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(func=cmd_api)

    # Options after `worker` are Celery's own (-n, --concurrency, -Q, ...).
    worker = commands.add_parser("worker", help="run a Celery worker (extra options go to Celery)", allow_abbrev=False)
    # Read here, not left to Celery: it would take an unsupported pool, or quietly ignore one.
    worker.add_argument("-P", "--pool", default="threads", help=f"one of {', '.join(SUPPORTED_POOLS)}")
    worker.set_defaults(func=cmd_worker, passes_options_through=True)

    migrate = commands.add_parser("migrate", help="upgrade the database to the newest schema")
    migrate.set_defaults(func=cmd_migrate)

    bench = commands.add_parser(
        "bench", help="measure Runstream against its baselines (own database on DATABASE_URL's server)"
    )
    bench.add_argument("--quick", action="store_true", help="the short run (under 2 minutes)")
    bench.add_argument(
        "--only",
        type=_scenario_names,
        default=SCENARIO_NAMES,
        metavar="NAME[,NAME..]",
        help=f"run only these scenarios ({', '.join(SCENARIO_NAMES)})",
    )
    bench.add_argument(
        "--fanout-subscribers",
        type=_subscriber_counts,
        metavar="N[,N..]",
        help="the fan-out levels instead of the profile's (the 10,000 targets need 10000 among them)",
    )
    bench.add_argument("--json", default="bench-results.json", metavar="PATH", help="where the results go")
    bench.add_argument("--plot", metavar="PATH", help="also draw the results as a PNG chart")
    bench.set_defaults(func=cmd_bench)

    soak = commands.add_parser(
        "soak", help="seeded chaos soak on private Postgres and Redis: kills, restarts, freezes; checks every job"
    )
    soak.add_argument("--seed", type=int, default=1)
    soak.add_argument("--jobs", type=int, default=60)
    soak.add_argument("--duration", type=float, default=75.0, help="seconds of fault injection")
    soak.add_argument("--apis", type=int, default=2)
    soak.add_argument("--workers", type=int, default=2)
    soak.add_argument("--log-dir", metavar="PATH", help="where the processes' logs go (default: a temporary folder)")
    soak.set_defaults(func=cmd_soak)

    stats = commands.add_parser("stats", help="print the analytics summary (as GET /api/analytics/summary)")
    stats.add_argument("--since", type=parse_duration, help="jobs created at most this long ago (e.g. 24h)")
    stats.add_argument("--until", type=parse_duration, help="jobs created at least this long ago")
    stats.add_argument("--session-id")
    stats.add_argument("--agent", help="only this agent's jobs")
    stats.add_argument("--tenant", default="default")
    stats.set_defaults(func=cmd_stats)

    rotate = commands.add_parser(
        "rotate-secret", help="add a new key for stream tokens (when RUNSTREAM_SECRET is not set)"
    )
    rotate.set_defaults(func=cmd_rotate_secret)

    prune = commands.add_parser("prune", help="delete finished jobs and their events older than a cutoff")
    prune.add_argument("--older-than", type=parse_duration, required=True, help="e.g. 30d, 12h, 2w")
    prune.add_argument("--yes", action="store_true", help="delete (without it: a dry run that only counts)")
    prune.set_defaults(func=cmd_prune)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passes_options_through", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.celery_args = extra
    try:
        args.func(args)
    except SettingsError as exc:
        # Before anything starts: one line, and a non-zero exit.
        sys.exit(f"runstream: {exc}")


if __name__ == "__main__":
    main()
