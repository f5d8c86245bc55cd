"""The ``runstream`` console script. Each command reads the settings from the environment."""

from __future__ import annotations

import argparse
import sys

from runstream.settings import Settings, get_settings


def require_database_url(settings: Settings) -> str:
    if not settings.database_url:
        sys.exit("runstream: DATABASE_URL is not set (or use `runstream dev`, which embeds Postgres).")
    return settings.database_url


def cmd_migrate(args: argparse.Namespace) -> None:
    from db.migrate import upgrade_to_head

    upgrade_to_head(require_database_url(get_settings()))
    print("runstream: database is at the newest schema")


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    require_database_url(get_settings())
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=5,
    )


def cmd_worker(args: argparse.Namespace) -> None:
    require_database_url(get_settings())
    from tasks.celery_app import celery_app

    celery_app.worker_main(["worker", "--loglevel=INFO", *args.celery_args])


def cmd_dev(args: argparse.Namespace) -> None:
    from runstream.dev import main as dev_main

    sys.exit(dev_main(args.host, args.port))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runstream", description=__doc__)
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
    worker = commands.add_parser("worker", help="run a Celery worker (extra options go to Celery)")
    worker.set_defaults(func=cmd_worker, passes_options_through=True)

    migrate = commands.add_parser("migrate", help="upgrade the database to the newest schema")
    migrate.set_defaults(func=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passes_options_through", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.celery_args = extra
    args.func(args)


if __name__ == "__main__":
    main()
