"""A real PgBouncer (Debian's package) in transaction pooling mode, on a free port."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.support.processes import free_port
from tests.support.waiting import wait_until

PGBOUNCER = "/usr/sbin/pgbouncer"
# Few server connections for many clients: consecutive transactions of one
# client land on different server connections, as they do under load.
SERVER_POOL_SIZE = 3

CONFIG = """
[databases]
* = host={host} port={port} user={user}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = any
admin_users = {user}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
logfile = {logfile}
ignore_startup_parameters = extra_float_digits,options
"""


class PgBouncer:
    def __init__(self, port: int, workdir: Path, proc: subprocess.Popen[bytes]):
        self.port = port
        self.workdir = workdir
        self.proc = proc

    def url_for(self, database_url: str) -> str:
        """``database_url`` (a direct one), through this PgBouncer."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def clients(self, database: str) -> list[str]:
        """The application names of the clients connected to ``database`` (SHOW CLIENTS)."""
        # The admin console speaks only the simple query protocol: psql does.
        out = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-AtF",
                "|",
                "-c",
                "SHOW CLIENTS",
                "pgbouncer",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        rows = [line.split("|") for line in out.splitlines() if line]
        # Columns: type, user, database, ..., application_name (the last one).
        return [row[-1] for row in rows if len(row) > 3 and row[2] == database]


@contextmanager
def running_pgbouncer(admin_database_url: str) -> Iterator[PgBouncer]:
    if not os.path.exists(PGBOUNCER):
        pytest.fail(f"PgBouncer is required for these tests and is not installed at {PGBOUNCER}", pytrace=False)
    target = make_url(admin_database_url)
    workdir = Path(tempfile.mkdtemp(prefix="rs-pgbouncer-"))
    # PgBouncer refuses to run as root; as root it is told to run as the postgres user.
    workdir.chmod(0o777)
    port = free_port()
    config = workdir / "pgbouncer.ini"
    config.write_text(
        CONFIG.format(
            host=target.host or "127.0.0.1",
            port=target.port or 5432,
            user=target.username or "postgres",
            listen_port=port,
            pool_size=SERVER_POOL_SIZE,
            logfile=workdir / "pgbouncer.log",
        )
    )
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([PGBOUNCER, *as_user, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    bouncer = PgBouncer(port, workdir, proc)

    def accepting() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"PgBouncer exited with {proc.returncode}")
        try:
            psycopg.connect(bouncer.url_for(admin_database_url), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    try:
        try:
            wait_until(accepting, timeout=30, what="PgBouncer to accept connections")
        except AssertionError as failed:
            log = workdir / "pgbouncer.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"PgBouncer did not start ({failed}):\n{text[-3000:]}", pytrace=False)
        yield bouncer
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
