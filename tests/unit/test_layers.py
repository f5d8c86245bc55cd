"""The floors' import rule, read off the source: cli → {api, tasks} → db → core.

Every import counts, whether at the top of a module, inside a function, or
under ``TYPE_CHECKING``: a type is a dependency too. ``bench/`` is a repository
tool and the roof (``runstream/``: the command line, dev mode, reports) sits
on everything, so neither is held to a rule here; nothing below may import them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# folder -> the floors its modules may import (its own included)
MAY_IMPORT = {
    "core": {"core"},
    "db": {"core", "db"},
    "api": {"core", "db", "api"},
    "tasks": {"core", "db", "tasks"},
    "migrations": {"core", "db", "migrations"},
}
FLOORS = {"core", "db", "api", "tasks", "migrations", "bench"}
# The database driver is the data floor's own: the floors above see db/'s functions and errors.
DRIVERS = ("psycopg", "psycopg_pool", "asyncpg")


def floor_of(module: str) -> str | None:
    """The floor of an absolute module name; None for what is not Runstream's."""
    parts = module.split(".")
    if parts[0] != "runstream":
        return None
    if len(parts) > 1 and parts[1] in FLOORS:
        return parts[1]
    return "roof"  # runstream itself: cli, dev, stats, prune, the exports


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``; ``from runstream import x``
    names the package ``runstream``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"line {node.lineno}: relative import (the floors import by absolute name)"
            assert node.module is not None
            found.append((node.lineno, node.module))
    return found


def upward_imports(folder: str, source: str) -> list[str]:
    allowed = MAY_IMPORT[folder]
    found = imported_modules(source)
    wrong = [
        f"line {line}: {module} ({floor})"
        for line, module in found
        if (floor := floor_of(module)) is not None and floor not in allowed
    ]
    if folder not in ("db", "migrations"):
        wrong += [f"line {line}: {module} (driver)" for line, module in found if module.split(".")[0] in DRIVERS]
    return wrong


@pytest.mark.parametrize("folder", sorted(MAY_IMPORT))
def test_each_floor_imports_only_the_floors_below(folder: str) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no modules under {folder}/"
    broken = {
        str(path.relative_to(ROOT)): wrong
        for path in files
        if (wrong := upward_imports(folder, path.read_text(encoding="utf-8")))
    }
    assert broken == {}, f"{folder}/ may import only {sorted(MAY_IMPORT[folder])}"


@pytest.mark.parametrize(
    ("folder", "source", "culprit"),
    [
        ("db", "from runstream.api.payloads import Job\n", "runstream.api.payloads (api)"),
        ("tasks", "def f():\n    from runstream.api import hub\n", "runstream.api (api)"),
        ("api", "import runstream.tasks.run_job\n", "runstream.tasks.run_job (tasks)"),
        ("core", "from runstream.db import queries\n", "runstream.db (db)"),
        ("api", "from runstream import cli\n", "runstream (roof)"),
        ("db", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from runstream.bench import main\n",
         "runstream.bench (bench)"),
        ("api", "import psycopg\n", "psycopg (driver)"),
        ("tasks", "from psycopg_pool import AsyncConnectionPool\n", "psycopg_pool (driver)"),
    ],
)  # fmt: skip
def test_the_rule_catches_an_upward_import(folder: str, source: str, culprit: str) -> None:
    assert [wrong.split(": ", 1)[1] for wrong in upward_imports(folder, source)] == [culprit]


def test_sideways_and_downward_imports_pass() -> None:
    source = "from runstream.db.jobs import Status\nfrom runstream.core.settings import Settings\nimport json\n"
    assert upward_imports("api", source) == []
    assert upward_imports("tasks", source) == []
