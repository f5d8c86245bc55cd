"""Malformed settings, and settings that contradict each other, stop `runstream api`
and `runstream worker` before anything starts: one line naming the variables
(never their values), and a non-zero exit. So does a worker pool Runstream cannot
run on. And importing the worker or the API reads no setting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runstream.core.settings import child_environment
from tests.support.processes import RUNSTREAM

BAD_SETTINGS = [
    # A colon for "=": once read as "no keys", which served open.
    ("RUNSTREAM_API_KEYS", "acme:sekrit-key", "RUNSTREAM_API_KEYS: entry 1 is not tenant=key"),
    ("RUNSTREAM_API_KEYS", "acme=k1,=k2", "RUNSTREAM_API_KEYS: entry 2 is not tenant=key"),
    ("RUNSTREAM_LOG_FORMAT", "jsonn", "RUNSTREAM_LOG_FORMAT: Input should be 'json' or 'text'"),
    (
        "RUNSTREAM_LOG_LEVEL",
        "loud",
        "RUNSTREAM_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'",
    ),
    ("RUNSTREAM_WORKER_FLUSH_LANES", "-3", "RUNSTREAM_WORKER_FLUSH_LANES: Input should be greater than 0"),
    ("RUNSTREAM_MAX_ATTEMPTS", "0", "RUNSTREAM_MAX_ATTEMPTS: Input should be greater than 0"),
]

# Each valid alone, wrong together (the other side of each rule keeps its default).
CONTRADICTIONS = [
    (
        {"RUNSTREAM_WORKER_DB_POOL_SIZE": "2"},
        "RUNSTREAM_WORKER_FLUSH_LANES must be less than RUNSTREAM_WORKER_DB_POOL_SIZE"
        " (one connection stays free for heartbeats and the reaper)",
    ),
    (
        {"RUNSTREAM_STALE_AFTER_S": "5"},
        "RUNSTREAM_STALE_AFTER_S must be more than RUNSTREAM_HEARTBEAT_S + RUNSTREAM_CANCEL_POLL_S"
        " (the longest gap between two heartbeats of a live run)",
    ),
    ({"RUNSTREAM_RETRY_BACKOFF_S": "120"}, "RUNSTREAM_RETRY_BACKOFF_MAX_S must be at least RUNSTREAM_RETRY_BACKOFF_S"),
    ({"RUNSTREAM_MAX_STREAMS": "10"}, "RUNSTREAM_MAX_STREAMS_PER_TENANT must be at most RUNSTREAM_MAX_STREAMS"),
    # Several at once: all of them, on the one line.
    (
        {"RUNSTREAM_HEARTBEAT_S": "40", "RUNSTREAM_MAX_STREAMS": "10"},
        "RUNSTREAM_STALE_AFTER_S must be more than RUNSTREAM_HEARTBEAT_S + RUNSTREAM_CANCEL_POLL_S"
        " (the longest gap between two heartbeats of a live run);"
        " RUNSTREAM_MAX_STREAMS_PER_TENANT must be at most RUNSTREAM_MAX_STREAMS",
    ),
]

# A database that does not exist: every process here must stop before it tries it.
NOWHERE = "postgresql://nobody@127.0.0.1:1/none"


def run(args: list[str], **settings: str) -> subprocess.CompletedProcess[str]:
    env = child_environment(DATABASE_URL=NOWHERE, **settings)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["api", "worker"])
@pytest.mark.parametrize(("variable", "value", "message"), BAD_SETTINGS)
def test_a_malformed_setting_stops_the_process_with_one_line(
    command: str, variable: str, value: str, message: str
) -> None:
    done = run([RUNSTREAM, command], **{variable: value})
    assert done.returncode == 1
    assert done.stderr == f"runstream: invalid settings: {message}\n"
    assert done.stdout == ""
    assert "sekrit" not in done.stderr


@pytest.mark.parametrize("command", ["api", "worker"])
@pytest.mark.parametrize(("settings", "message"), CONTRADICTIONS)
def test_contradicting_settings_stop_the_process_with_one_line(
    command: str, settings: dict[str, str], message: str
) -> None:
    done = run([RUNSTREAM, command], **settings)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"runstream: invalid settings: {message}\n"


# Celery's other pools, in each way its command line spells an option.
@pytest.mark.parametrize(
    "args",
    [
        ["--pool", "prefork"],
        ["--pool=processes"],
        ["-P", "eventlet"],
        ["-Pgevent"],
        ["--pool", "custom"],
    ],
)
def test_a_pool_runstream_cannot_run_on_is_refused(args: list[str]) -> None:
    done = run([RUNSTREAM, "worker", *args])
    pool = args[-1].removeprefix("--pool=").removeprefix("-P")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"runstream: worker pool {pool!r} is not supported: use threads (the default) or solo\n"


def test_importing_the_worker_or_the_api_reads_no_setting() -> None:
    # Settings so broken that any read fails: the imports must not notice.
    code = "import runstream.tasks.celery_app, runstream.api.app, runstream.api.server; print('ok')"
    done = run([sys.executable, "-c", code], RUNSTREAM_LOG_FORMAT="jsonn", RUNSTREAM_API_KEYS="acme:key")
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
