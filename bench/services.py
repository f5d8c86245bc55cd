"""What the bench runs against: its own database, and real processes.

The API and the worker are started the way an operator starts them (the
``runstream`` console script); the baseline app runs under the same uvicorn.
Each process gets its own process group and log file, and is stopped with
SIGTERM (then SIGKILL) by its pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from runstream.db.connector import plain_url
from runstream.db.migrate import upgrade_to_head

RUNSTREAM = str(Path(sys.executable).with_name("runstream"))

# The bench measures capacity, so the API's protective limits (open streams per
# process and tenant, job creation rate) are lifted for its processes.
NO_LIMITS = {
    "RUNSTREAM_MAX_STREAMS": "100000",
    "RUNSTREAM_MAX_STREAMS_PER_TENANT": "100000",
    "RUNSTREAM_JOB_RATE_LIMIT": "0",
}


# --- the database --------------------------------------------------------------
def create_database(server_url: str) -> str:
    """A new, migrated database on the server of ``server_url``; returns its URL."""
    name = f"rs_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain_url(server_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(plain_url(server_url)).set(database=name).render_as_string(hide_password=False)
    upgrade_to_head(url)
    return url


def drop_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    if name is None:
        raise ValueError("the database URL names no database")
    with psycopg.connect(plain_url(server_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def api_connection_count(database_url: str, pid: int) -> int:
    """Postgres connections held by the API process ``pid`` (its application names carry its pid)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"runstream-api-{pid}%",),
        ).fetchone()
    assert row is not None
    return int(row[0])


# --- processes -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """One subprocess in its own process group, its output in ``<log_dir>/<name>.log``."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_dir: Path,
        port: int | None = None,
    ):
        self.name = name
        self.port = port
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def http_port(self) -> int:
        """The port of a service that serves HTTP (an API, the baseline app)."""
        if self.port is None:
            raise RuntimeError(f"{self.name} listens on no port")
        return self.port

    def rss_bytes(self) -> int:
        return psutil.Process(self.pid).memory_info().rss

    def cpu_seconds(self) -> float:
        """User + system CPU the process has used so far."""
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if ready():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log()[-3000:]}")

    def wait_healthy(self, path: str) -> None:
        url = f"http://127.0.0.1:{self.port}{path}"

        def ok() -> bool:
            try:
                return httpx.get(url, timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_until(ok)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start_api(env: dict[str, str], log_dir: Path, name: str = "api") -> Service:
    port = free_port()
    api = Service(name, [RUNSTREAM, "api", "--port", str(port)], env, log_dir, port)
    api.wait_healthy("/healthz")
    return api


def start_worker(env: dict[str, str], log_dir: Path, name: str = "worker") -> Service:
    worker = Service(name, [RUNSTREAM, "worker", "-n", f"{name}-{os.getpid()}@%h"], env, log_dir)
    worker.wait_until(lambda: "ready." in worker.log())
    return worker


def start_baseline(env: dict[str, str], log_dir: Path, name: str = "baseline") -> Service:
    """The in-memory recipe (bench.baseline_app) on the same uvicorn stack as the API."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "runstream.bench.baseline_app:create_app",
        "--factory",
    ]
    args += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    app = Service(name, args, env, log_dir, port)
    app.wait_healthy("/healthz")
    return app
