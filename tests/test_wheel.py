"""The built distributions, installed the way a user installs them.

``python -m build`` makes the sdist and, from it, the wheel; ``twine check``
accepts both. The wheel goes into a fresh virtualenv: no editable install, the
repository on no ``sys.path`` (every command runs from an empty temporary
directory). The venv borrows the dev venv's third-party packages through a
``.pth`` line naming its site-packages, so nothing is downloaded; a path a
``.pth`` adds is not itself a site directory, so the dev venv's editable-install
hook (a ``.pth`` of its own there) never runs, and ``runstream`` can only come
from the wheel. From that install: ``runstream migrate`` on an empty database,
a worker and the API, and a job streamed to completion.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from runstream import __version__
from runstream.dev import http_ok
from tests.conftest import create_database, drop_database, service_environment
from tests.support.config import services
from tests.support.processes import ServiceProcess, free_port
from tests.support.sse import deltakit_events, read_stream

REPO_ROOT = Path(__file__).resolve().parent.parent
# The repository's folders that must never be import packages of their own once installed.
REPO_FOLDERS = ("api", "tasks", "db", "migrations", "bench")


@dataclass(frozen=True)
class Install:
    wheel: Path
    sdist: Path
    venv: Path
    cwd: Path  # empty: nothing of the repository is importable from it

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def runstream(self) -> str:
        return str(self.venv / "bin" / "runstream")

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=self.cwd,
            env=without_pythonpath(env or dict(os.environ)),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def without_pythonpath(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name != "PYTHONPATH"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site_packages = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site_packages / "runstream_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    cwd = root / "elsewhere"
    cwd.mkdir()
    return Install(wheel, sdist, venv, cwd)


def test_the_wheel_holds_one_import_package(installed: Install) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        dist_info = f"runstream-{__version__}.dist-info"
        record = wheel.read(f"{dist_info}/RECORD").decode()
        tops = {row[0].split("/")[0] for row in csv.reader(io.StringIO(record)) if row}
        assert tops == {"runstream", dist_info}
        assert wheel.read(f"{dist_info}/top_level.txt").decode().split() == ["runstream"]
        names = set(wheel.namelist())
    # What only works when shipped: the chat page, Alembic's template, the typing marker.
    for path in (
        "api/static/index.html",
        "api/static/app.js",
        "api/static/style.css",
        "migrations/script.py.mako",
        "py.typed",
        "api/jwt_auth.py",
    ):
        assert f"runstream/{path}" in names
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(installed.wheel), str(installed.sdist)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_install_imports_only_from_itself(installed: Install) -> None:
    probe = installed.run(
        installed.python,
        "-c",
        "import importlib.util, json, sys, runstream; print(json.dumps({"
        "'file': runstream.__file__, 'path': sys.path, "
        f"'folders': [n for n in {REPO_FOLDERS!r} if importlib.util.find_spec(n)]}}))",
    )
    assert probe.returncode == 0, probe.stderr
    found = __import__("json").loads(probe.stdout)
    assert Path(found["file"]).resolve().is_relative_to(installed.venv.resolve())
    # The only path inside the repository is the borrowed third-party site-packages (the dev venv lives there).
    # ('' is the probe's working directory.)
    in_repo = [entry for entry in found["path"] if (installed.cwd / entry).resolve().is_relative_to(REPO_ROOT)]
    assert in_repo == [sysconfig.get_paths()["purelib"]]
    assert found["folders"] == []

    version = installed.run(installed.runstream, "--version")
    assert version.stdout.strip() == f"runstream {__version__}"

    # Every module of the installed package imports there, bench included (it ships);
    # the migrations are Alembic's scripts, run by `runstream migrate` below.
    every = installed.run(
        installed.python,
        "-c",
        "import importlib, pkgutil, runstream\n"
        "names = [m.name for m in pkgutil.walk_packages(runstream.__path__, 'runstream.')\n"
        "         if not m.name.startswith('runstream.migrations.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))",
    )
    assert every.returncode == 0, every.stderr[-3000:]
    assert int(every.stdout) > 60
    assert installed.run(installed.runstream, "bench", "--help").returncode == 0


def schema(database_url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2"
        ).fetchall()
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return [*rows, ("alembic_version", "version_num", str(version))]


@pytest.fixture
def empty_database() -> Iterator[str]:
    url = create_database("rs_wheel", revision=None)
    yield url
    drop_database(url)


async def test_the_installed_commands_run_a_job(
    installed: Install, empty_database: str, database_url: str, tmp_path: Path
) -> None:
    env = without_pythonpath(
        service_environment(empty_database, services.redis_url, f"rs-wheel-{uuid.uuid4().hex[:12]}", tmp_path)
    )
    migrated = installed.run(installed.runstream, "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    # The installed migrations make exactly the schema the repository's do.
    assert schema(empty_database) == schema(database_url)

    worker = ServiceProcess(
        "wheel-worker",
        ["worker", "-n", f"wheel-{uuid.uuid4().hex[:6]}@%h"],
        env,
        tmp_path,
        program=installed.runstream,
        cwd=installed.cwd,
    ).start()
    port = free_port()
    api = ServiceProcess(
        "wheel-api", ["api", "--port", str(port)], env, tmp_path, program=installed.runstream, cwd=installed.cwd
    ).start()
    try:
        worker.wait_until(lambda: " ready." in worker.log())
        # The task is registered under its contract name.
        assert "runstream.run_job" in worker.log()
        url = f"http://127.0.0.1:{port}"
        api.wait_until(http_ok(f"{url}/healthz"))
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            created = await client.post(
                "/api/jobs", json={"message": "from the wheel", "metadata": {"offline": {"words": 5}}}
            )
            assert created.status_code == 202, created.text
            events = deltakit_events(await read_stream(client, created.json()["events_url"]))
            assert events[-1] == {"type": "done", "status": "completed"}
            assert "".join(e["delta"] for e in events if e["type"] == "text_delta").strip()
            page = await client.get("/")
            assert page.status_code == 200 and 'src="static/app.js"' in page.text
            assert (await client.get("/static/app.js")).status_code == 200
    finally:
        api.stop()
        worker.stop()
