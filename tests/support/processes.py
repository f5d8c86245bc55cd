"""Run Runstream's own commands as real subprocesses, the way an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from runstream.bench.services import free_port
from runstream.dev import http_ok
from tests.support.waiting import wait_until

# The console script installed next to the interpreter running the tests.
RUNSTREAM = str(Path(sys.executable).with_name("runstream"))


class ServiceProcess:
    """One `runstream ...` process in its own process group, its output in a log file."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_dir: Path,
        *,
        program: str = RUNSTREAM,
        cwd: Path | None = None,
    ):
        self.name = name
        self.args = [program, *args]
        self.env = env
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_until(self, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        """Wait for `ready`, failing at once with the log if the process exits first."""

        def alive_and_ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}")
            return ready()

        try:
            wait_until(alive_and_ready, timeout=timeout, what=f"{self.name} to be ready")
        except AssertionError as failed:
            raise AssertionError(f"{failed}; its log ends:\n{self.log()[-4000:]}") from None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not go in time. Returns the exit code."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole group: the crash an operator cannot prevent."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start_worker(env: dict[str, str], log_dir: Path, name: str = "worker", *extra: str) -> ServiceProcess:
    worker = ServiceProcess(name, ["worker", "-n", f"{name}-{os.getpid()}@%h", *extra], env, log_dir).start()
    worker.wait_until(lambda: " ready." in worker.log())
    return worker


class ApiServer(ServiceProcess):
    def __init__(self, env: dict[str, str], log_dir: Path, name: str = "api", port: int | None = None):
        self.port = port or free_port()
        super().__init__(name, ["api", "--port", str(self.port)], env, log_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_api(env: dict[str, str], log_dir: Path, name: str = "api", port: int | None = None) -> ApiServer:
    api = ApiServer(env, log_dir, name, port)
    api.start()
    api.wait_until(http_ok(f"{api.url}/healthz"))
    return api
