"""``runstream dev`` as a user runs it: a real subprocess, embedded Postgres, the
filesystem broker, a job through the HTTP API, Ctrl-C (SIGINT), and a second start
that still has the first one's data."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from runstream.core.settings import child_environment
from tests.support.processes import RUNSTREAM, ServiceProcess, free_port, http_ok
from tests.support.sse import deltakit_events

# initdb on a first start takes a few seconds; a loaded CI machine more.
START_TIMEOUT = 120.0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir the unprivileged Postgres user can reach when the tests run as root.
    pytest's tmp_path sits under 0700 directories, which dev mode rightly refuses to
    open up (it says so: see test_an_unreachable_data_dir_is_a_clear_error)."""
    parent = Path(tempfile.mkdtemp(prefix="runstream-dev-test-"))
    parent.chmod(0o711)
    yield parent / "data"
    shutil.rmtree(parent, ignore_errors=True)


def dev_environment(data_dir: Path, **extra: str) -> dict[str, str]:
    """The developer's environment minus anything that would point dev mode at a
    database or broker: the embedded defaults are what is under test."""
    return child_environment(RUNSTREAM_DATA_DIR=str(data_dir), RUNSTREAM_OFFLINE_DELAY_MS="0", **extra)


class Dev(ServiceProcess):
    def __init__(self, env: dict[str, str], log_dir: Path, name: str):
        self.port = free_port()
        super().__init__(name, ["dev", "--port", str(self.port)], env, log_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_and_wait(self) -> Dev:
        self.start()
        self.wait_until(http_ok(f"{self.url}/healthz"), timeout=START_TIMEOUT)
        # Ready means the URL line is printed: the worker is up too.
        self.wait_until(lambda: "Runstream is running" in self.log(), timeout=START_TIMEOUT)
        return self

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.pid).children(recursive=True)

    def interrupt(self) -> int:
        """Ctrl-C at a terminal: SIGINT to the foreground process group (only dev's own)."""
        self.signal(signal.SIGINT)
        assert self.proc is not None
        return self.proc.wait(60)


def run_job(base_url: str, message: str) -> tuple[str, list[dict]]:
    with httpx.Client(base_url=base_url, timeout=60) as http:
        created = http.post("/api/jobs", json={"message": message, "session_id": "dev-test"})
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        events = deltakit_events(http.get(f"/api/jobs/{job_id}/events").text)
        return job_id, events


def test_dev_runs_the_stack_embedded_stops_clean_on_ctrl_c_and_keeps_its_data(tmp_path: Path, data_dir: Path) -> None:
    dev = Dev(dev_environment(data_dir), tmp_path, "dev-first").start_and_wait()
    try:
        children = dev.tree()
        names = " ".join(" ".join(p.cmdline()) for p in children)
        # The three services are dev's own children: nothing runs detached.
        assert "postgres -D" in names and "runstream worker" in names and "runstream api" in names, names
        assert "embedded Postgres ready" in dev.log()
        assert f"broker: filesystem ({data_dir.resolve() / 'broker'})" in dev.log()

        job_id, events = run_job(dev.url, "hello from dev mode")
        assert events[-1] == {"type": "done", "status": "completed"}
        answer = "".join(e["delta"] for e in events if e["type"] == "text_delta")
        assert answer.startswith("You said: hello from dev mode")
        # Both processes' logs come through, prefixed.
        assert "[api] " in dev.log() and "[worker] " in dev.log() and "[postgres] " in dev.log()
    finally:
        code = dev.interrupt()

    assert code == 0, dev.log()[-3000:]
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running: {alive}"
    assert "[dev] stopped" in dev.log()
    # The data stays for the next start.
    assert (data_dir / "postgres" / "PG_VERSION").is_file()
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "Postgres did not shut down cleanly"
    assert (data_dir / "broker" / "queue").is_dir()

    again = Dev(dev_environment(data_dir), tmp_path, "dev-second").start_and_wait()
    try:
        assert "initializing a Postgres cluster" not in again.log()
        status = httpx.get(f"{again.url}/api/jobs/{job_id}", timeout=10)
        assert status.status_code == 200
        assert status.json()["status"] == "completed"
        replay = deltakit_events(httpx.get(f"{again.url}/api/jobs/{job_id}/events", timeout=30).text)
        assert replay == events
        listed = httpx.get(f"{again.url}/api/jobs", params={"session_id": "dev-test"}, timeout=10).json()
        assert [job["job_id"] for job in listed["jobs"]] == [job_id]
        second_children = again.tree()
    finally:
        assert again.interrupt() == 0, again.log()[-3000:]
    assert psutil.wait_procs(second_children, timeout=10)[1] == []


def test_sigterm_stops_everything_too(tmp_path: Path, data_dir: Path) -> None:
    dev = Dev(dev_environment(data_dir), tmp_path, "dev-term").start_and_wait()
    children = dev.tree()
    assert dev.proc is not None
    dev.proc.send_signal(signal.SIGTERM)
    assert dev.proc.wait(60) == 0, dev.log()[-3000:]
    assert psutil.wait_procs(children, timeout=10)[1] == []


def test_a_taken_port_is_a_clear_error_before_anything_starts(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [RUNSTREAM, "dev", "--port", str(port)],
            env=dev_environment(data_dir), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists(), "dev mode created its data before checking the port"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs the unprivileged Postgres user")
def test_an_unreachable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    port = free_port()
    result = subprocess.run(
        [RUNSTREAM, "dev", "--port", str(port)],
        env=dev_environment(private / "data"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"'runstream-postgres', which cannot enter {private}" in result.stderr
    assert "Traceback" not in result.stderr
    # Refused, not "fixed": the directory was not opened up.
    assert private.stat().st_mode & 0o777 == 0o700


def test_dev_uses_the_configured_database_and_broker(tmp_path: Path, service_env: dict[str, str]) -> None:
    # The session's database and Redis, on a queue of this test's own.
    env = dev_environment(
        tmp_path / "data",
        DATABASE_URL=service_env["DATABASE_URL"],
        CELERY_BROKER_URL=service_env["CELERY_BROKER_URL"],
        RUNSTREAM_QUEUE=f"{service_env['RUNSTREAM_QUEUE']}-dev",
    )
    dev = Dev(env, tmp_path, "dev-external").start_and_wait()
    try:
        _, events = run_job(dev.url, "hello from outside")
        assert events[-1] == {"type": "done", "status": "completed"}
        assert "using DATABASE_URL" in dev.log()
        assert "[postgres]" not in dev.log()
        assert "broker: redis://" in dev.log()
    finally:
        assert dev.interrupt() == 0
    assert not (tmp_path / "data" / "postgres").exists()
