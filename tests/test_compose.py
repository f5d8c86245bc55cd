"""docker-compose.yml and the Dockerfile, checked structurally (no Docker engine here):
the services and their order, health, restarts, that every setting they pass is one
Runstream reads, and that every command they run exists."""

from __future__ import annotations

import argparse
import re
import shlex
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from runstream.cli import build_parser
from runstream.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# The services that run Runstream's own image.
OURS = ("migrate", "api", "worker")
LONG_RUNNING = ("postgres", "rabbitmq", "api", "worker")


def settings_variables() -> set[str]:
    """Every environment variable name the settings module reads, from its fields."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(f"{prefix}{name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:  # AliasChoices
            names.update(str(choice).upper() for choice in alias.choices)
    return names


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_settings_reader_is_derived_not_hard_coded() -> None:
    names = settings_variables()
    # Spot checks that the derivation follows prefix and aliases.
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "RUNSTREAM_MODEL", "RUNSTREAM_API_KEYS"} <= names
    assert "RUNSTREAM_DATABASE_URL" not in names


def test_the_production_services_are_all_there() -> None:
    assert set(SERVICES) == {"postgres", "rabbitmq", "migrate", "api", "worker"}


def test_start_order_is_expressed_with_conditions() -> None:
    assert SERVICES["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        assert SERVICES[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "rabbitmq": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_a_healthcheck_and_restart(name: str) -> None:
    service = SERVICES[name]
    check = service["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1
    assert {"interval", "timeout", "retries"} <= set(check)
    assert service["restart"] == "unless-stopped"


def test_the_migration_is_one_shot() -> None:
    # It must exit for service_completed_successfully; a failure is retried a few times.
    assert SERVICES["migrate"]["restart"].startswith("on-failure")
    assert "healthcheck" not in SERVICES["migrate"]


@pytest.mark.parametrize("name", OURS)
def test_our_services_pass_only_settings_runstream_reads(name: str) -> None:
    env = SERVICES[name]["environment"]
    assert isinstance(env, dict)
    unknown = set(env) - settings_variables()
    assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"
    assert {"DATABASE_URL", "CELERY_BROKER_URL"} <= set(env)
    # Every service of ours talks to the same database and broker.
    assert env == SERVICES["api"]["environment"]


def test_urls_point_at_the_compose_services() -> None:
    env = SERVICES["api"]["environment"]
    assert re.fullmatch(
        r"postgresql://runstream:\$\{POSTGRES_PASSWORD:-\w+\}@postgres:5432/runstream", env["DATABASE_URL"]
    )
    assert env["CELERY_BROKER_URL"].startswith("amqp://") and "@rabbitmq:5672/" in env["CELERY_BROKER_URL"]


@pytest.mark.parametrize("name", OURS)
def test_our_commands_are_runstream_subcommands_that_parse(name: str) -> None:
    service = SERVICES[name]
    assert service["build"] == "." and service["image"] == "runstream:latest"
    command = service["command"]
    assert command[0] == "runstream"
    assert command[1] in subcommands()
    # As runstream.cli.main parses: options it does not know go through only where
    # the command passes them on (the worker's go to Celery).
    args, extra = build_parser().parse_known_args(command[1:])
    assert args.command == command[1]
    assert not extra or getattr(args, "passes_options_through", False), extra


def test_the_api_listens_on_all_interfaces_on_the_published_port() -> None:
    args = build_parser().parse_args(SERVICES["api"]["command"][1:])
    assert (args.host, args.port) == ("0.0.0.0", 8000)
    assert SERVICES["api"]["ports"] == ["${RUNSTREAM_PORT:-8000}:8000"]
    assert "8000/healthz" in " ".join(SERVICES["api"]["healthcheck"]["test"])


def test_healthcheck_programs_exist_in_the_image() -> None:
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    worker_check = shlex.split(SERVICES["worker"]["healthcheck"]["test"][1])
    assert worker_check[0] in scripts  # celery, installed with the project
    # ...naming the node the worker command names (compose turns $$ into $).
    assert "worker@%h" in SERVICES["worker"]["command"]
    assert "worker@$$HOSTNAME" in worker_check
    assert worker_check[worker_check.index("-A") + 1] == "runstream.tasks.celery_app:celery_app"
    assert SERVICES["api"]["healthcheck"]["test"][1] == "python"


def test_the_dockerfile_installs_the_project_and_runs_unprivileged() -> None:
    lines = [
        line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]  # fmt: skip
    assert lines[0].startswith("FROM python:3.11")
    assert "COPY . ." in lines
    installs = [line for line in lines if line.startswith("RUN pip install")]
    assert installs == ['RUN pip install ".[providers]"']
    assert lines.index("COPY . .") < lines.index(installs[0])
    assert any(re.fullmatch(r"USER \w+", line) and line != "USER root" for line in lines)
    assert lines[-1] == 'CMD ["runstream", "api", "--host", "0.0.0.0", "--port", "8000"]'


def test_the_build_context_keeps_what_the_install_needs() -> None:
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }  # fmt: skip
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # The folders the package-dir table maps into `runstream` (api/, db/, ...).
    folders = {path.split("/")[0] for path in project["tool"]["setuptools"]["package-dir"].values()}
    needed = {"pyproject.toml", project["project"]["readme"]} | folders
    assert not needed & ignored, f"ignored but needed to install: {needed & ignored}"
    assert {".git", ".venv", ".runstream", ".env"} <= ignored
